import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from contrastkit import build_model
from contrastkit.evaluate import extract_features


def _dataset(n=10, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 3)


class _Flat(nn.Module):
    def __init__(self, out=5):
        super().__init__()
        self.bn = nn.BatchNorm1d(3 * 8 * 8)
        self.fc = nn.Linear(3 * 8 * 8, out)

    def forward(self, x):
        return self.fc(self.bn(x.flatten(1)))


def test_matches_direct_forward_and_order():
    torch.manual_seed(0)
    enc = _Flat()
    ds = _dataset(10)
    feats, labels = extract_features(enc, ds, batch_size=3)
    assert feats.dtype == torch.float32 and feats.shape == (10, 5) and feats.device.type == "cpu"
    assert labels.dtype == torch.long and torch.equal(labels, torch.arange(10) % 3)
    enc.eval()
    with torch.no_grad():
        expected = enc(ds.tensors[0])
    torch.testing.assert_close(feats, expected)


def test_restores_mixed_train_eval_modes():
    enc = _Flat()
    enc.train()
    enc.bn.eval()
    extract_features(enc, _dataset(4), batch_size=2)
    assert enc.training and not enc.bn.training and enc.fc.training


def test_accepts_dataloader():
    enc = _Flat()
    ds = _dataset(6)
    a, _ = extract_features(enc, ds, batch_size=4)
    b, _ = extract_features(enc, DataLoader(ds, batch_size=5))
    torch.testing.assert_close(a, b)


def test_contrastive_model_h_and_z():
    torch.manual_seed(0)
    model = build_model("resnet18", cifar_stem=True, width=0.125, proj_dim=7)
    ds = _dataset(4)
    h, _ = extract_features(model, ds, batch_size=4)
    z, _ = extract_features(model, ds, batch_size=4, use_projection=True)
    assert h.shape == (4, model.encoder.feature_dim)
    assert z.shape == (4, 7)
    model.eval()
    with torch.no_grad():
        h_ref, z_ref = model(ds.tensors[0])
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(z, z_ref)


def test_projection_needs_head():
    with pytest.raises(ValueError, match="use_projection=True needs a model with .encoder and .head"):
        extract_features(_Flat(), _dataset(2), use_projection=True)


def test_non_finite_features_raise():
    class Bad(nn.Module):
        def forward(self, x):
            out = x.flatten(1)[:, :4].clone()
            out[0, 0] = float("nan")
            return out

    with pytest.raises(ValueError, match="non-finite features"):
        extract_features(Bad(), _dataset(3))


def test_bad_inputs():
    with pytest.raises(TypeError, match="must be an nn.Module"):
        extract_features(lambda x: x, _dataset(2))
    with pytest.raises(ValueError, match="dataset is empty"):
        extract_features(_Flat(), TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        extract_features(_Flat(), _dataset(2), batch_size=0)
    with pytest.raises(ValueError, match=r"map \(B, 3, H, W\) to \(B, F\)"):
        extract_features(nn.Identity(), _dataset(2))


def test_does_not_touch_global_rng():
    enc = _Flat()
    before = torch.random.get_rng_state()
    extract_features(enc, _dataset(5), batch_size=2)
    assert torch.equal(before, torch.random.get_rng_state())


def test_builds_no_autograd_graph():
    """Features of a data set keep no graph: with one, every batch's activations would stay alive (the kNN monitor
    of a 50,000-image memory once grew to 24 GB that way)."""
    seen = []

    class _Spy(_Flat):
        def forward(self, x):
            seen.append(torch.is_grad_enabled())
            return super().forward(x)

    feats, _ = extract_features(_Spy(), _dataset(10), batch_size=4)
    assert seen == [False, False, False]
    assert not feats.requires_grad and feats.grad_fn is None
