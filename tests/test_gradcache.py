"""Gradient caching gives the full-batch gradient (BN-free model) while holding one micro-batch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastkit import build_model
from contrastkit.train.gradcache import cached_backward
from contrastkit.losses import NTXentLoss, SupConLoss


class TinyNet(nn.Module):
    """BN-free conv net returning (h, z), with dropout to check that RNG states are replayed."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                               nn.Dropout(dropout))
        self.g = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8))

    def forward(self, x):
        h = self.f(x)
        return h, self.g(h)


def _full(model, objective, views, labels):
    n, v = views.shape[:2]
    x = views.transpose(0, 1).reshape(v * n, *views.shape[2:])
    _, z = model(x)
    loss = objective(z.view(v, n, -1).transpose(0, 1), labels)
    loss.backward()
    return loss.detach()


def _objectives():
    nt = NTXentLoss(temperature=0.5)
    sc = SupConLoss(temperature=0.1)
    return {
        "ntxent": (lambda z, y: nt(z[:, 0], z[:, 1])),
        "supcon": (lambda z, y: sc(z, y)),
    }


@pytest.mark.parametrize("name", ["ntxent", "supcon"])
@pytest.mark.parametrize("micro", [1, 3, 4, 12])
def test_cached_gradients_equal_full_batch(name, micro):
    torch.manual_seed(0)
    model = TinyNet().double()
    views = torch.randn(12, 2, 3, 8, 8, dtype=torch.float64)
    labels = torch.randint(0, 3, (12,))
    objective = _objectives()[name]
    loss_full = _full(model, objective, views, labels)
    grads_full = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss_cached = cached_backward(model, objective, views, labels, micro)
    assert torch.allclose(loss_full, loss_cached, atol=1e-12)
    for gf, p in zip(grads_full, model.parameters()):
        assert torch.allclose(gf, p.grad, atol=1e-10, rtol=1e-8)


def test_dropout_rng_replayed():
    """With dropout, the re-forward must see the same masks as the cached forward."""
    torch.manual_seed(0)
    model = TinyNet(dropout=0.5).double()
    views = torch.randn(8, 2, 3, 8, 8, dtype=torch.float64)
    objective = _objectives()["ntxent"]
    torch.manual_seed(5)
    cached_backward(model, objective, views, None, 8)  # one micro-batch == the full batch
    g_one = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(5)
    loss = _full(model, objective, views, None)
    assert torch.isfinite(loss)
    for a, p in zip(g_one, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-10)


def test_batchnorm_is_per_micro_batch_and_running_stats_updated_once():
    """With BN the result is the per-micro-batch-BN gradient: equal to running each micro-batch's BN alone."""
    torch.manual_seed(0)
    model = build_model("resnet18", cifar_stem=True, width=0.125).double()
    views = torch.randn(8, 2, 3, 8, 8, dtype=torch.float64)
    objective = _objectives()["ntxent"]
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.num_batches_tracked.clone()
    cached_backward(model, objective, views, None, 4)
    assert int(bn.num_batches_tracked - before) == 2  # two micro-batches, counted once each
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_validation():
    model = TinyNet()
    with pytest.raises(ValueError, match="micro_batch_size"):
        cached_backward(model, _objectives()["ntxent"], torch.randn(4, 2, 3, 8, 8), None, 0)
    with pytest.raises(ValueError, match=r"\(N, V, C, H, W\)"):
        cached_backward(model, _objectives()["ntxent"], torch.randn(4, 3, 8, 8), None, 2)
