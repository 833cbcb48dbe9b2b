"""normalize=False: raw dot products (SimCLR Table 5's "no l2 norm" rows), against the float64 loop reference."""
from __future__ import annotations

import pytest
import torch

import reference_losses as ref
from contrastkit.losses import NTXentLoss, SupConLoss


def _features(N, V, D, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, V, D, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("tau", [0.05, 1.0, 100.0])
@pytest.mark.parametrize("chunk", [None, 3])
def test_supcon_raw_dot_product_matches_loop(variant, tau, chunk):
    f = _features(7, 3, 5, seed=1, scale=4.0)  # |z| ~ 9: logits far above 1/tau
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    got = SupConLoss(tau, variant=variant, chunk_size=chunk, normalize=False)(f, labels)
    assert got.item() == pytest.approx(ref.supcon_loop(f, labels, tau, variant, normalize=False), rel=1e-10)


def test_ntxent_raw_dot_product_matches_loop_without_overflow():
    f = _features(6, 2, 4, seed=2, scale=30.0)  # logits ~ 1e5 at tau 0.05: exp would overflow without shifting
    got = NTXentLoss(0.05, normalize=False)(f[:, 0].float(), f[:, 1].float())
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(ref.supcon_loop(f, None, 0.05, normalize=False), rel=1e-5)


def test_raw_dot_product_gradient_is_exact():
    f = _features(5, 2, 3, seed=3, scale=2.0).requires_grad_(True)
    labels = torch.tensor([0, 1, 0, 1, 2])
    for variant in ("out", "in"):
        loss = SupConLoss(0.7, variant=variant, normalize=False)
        assert torch.autograd.gradcheck(lambda x: loss(x, labels), (f,))


def test_scale_matters_only_without_normalisation():
    f = _features(6, 2, 8, seed=4)
    a, b = NTXentLoss(0.5), NTXentLoss(0.5, normalize=False)
    assert a(f[:, 0], f[:, 1]).item() == pytest.approx(a(3 * f[:, 0], 3 * f[:, 1]).item(), rel=1e-12)
    assert b(f[:, 0], f[:, 1]).item() != pytest.approx(b(3 * f[:, 0], 3 * f[:, 1]).item(), rel=1e-3)
    unit = torch.nn.functional.normalize(f, dim=-1)  # on unit rows both agree
    assert b(unit[:, 0], unit[:, 1]).item() == pytest.approx(a(unit[:, 0], unit[:, 1]).item(), rel=1e-12)


@pytest.mark.parametrize("cls", [NTXentLoss, SupConLoss])
def test_normalize_must_be_a_bool(cls):
    with pytest.raises(TypeError, match="normalize must be True or False, got str 'no'"):
        cls(normalize="no")
    assert "normalize=False" in repr(cls(normalize=False)) and "normalize" not in repr(cls())


def test_pretrain_without_l2_normalisation(tmp_path, image_folder):
    """--no-l2-normalize reaches the loss; it is refused for losses it does not apply to."""
    from conftest import TINY
    from contrastkit.cli import main
    from contrastkit.config import PretrainConfig
    from contrastkit.methods import DataInfo, get_method, with_method_defaults

    data = DataInfo([0, 1, 0, 1], ["a", "b"], 16, "toy")
    for method in ("simclr", "supcon"):
        cfg = with_method_defaults(PretrainConfig(method=method, l2_normalize=False, width=0.125))
        assert get_method(method).build(cfg, data).objective.loss.normalize is False
    common = ["pretrain", "--data", str(image_folder), "--epochs", "1", *TINY, "--knn-every", "0", "--augment-on",
              "device", "--no-l2-normalize", "--temperature", "10"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--loss", "margin", "--out", str(tmp_path / "b")]) == 2
