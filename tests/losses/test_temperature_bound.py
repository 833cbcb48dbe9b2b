"""The temperature's lower bound (``contrastkit.config.min_temperature``): at the bound the losses and their
gradients are finite in float32 for the worst batch, below it the loss is not, and the options refuse it at start
(issue 25: a temperature of 1e-45 passed, and the NaN that followed blamed --lr)."""
from __future__ import annotations

import pytest
import torch

from contrastkit.cli import main
from contrastkit.config import min_temperature
from contrastkit.losses import NTXentLoss, SupConLoss


def _worst(n: int, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """N pairs whose positives point away from their anchors while every other anchor points the same way: each
    anchor's term is 2 / tau, the most a term can be."""
    a = torch.zeros(n, d)
    a[:, 0] = 1.0
    return a.clone().requires_grad_(True), (-a).clone().requires_grad_(True)


@pytest.mark.parametrize("n", [2, 64, 1024])
@pytest.mark.parametrize("loss_name", ["ntxent", "supcon"])
def test_the_loss_is_finite_at_the_bound_and_overflows_below_it(n, loss_name):
    anchors = 2 * n
    for scale, finite in ((1.0, True), (0.25, False)):
        tau = min_temperature(anchors) * scale
        a, b = _worst(n)
        loss_fn = NTXentLoss(temperature=tau) if loss_name == "ntxent" else SupConLoss(temperature=tau)
        loss = loss_fn(a, b) if loss_name == "ntxent" else loss_fn(torch.stack([a, b], dim=1))
        assert bool(torch.isfinite(loss)) is finite, (scale, float(loss))
        if finite:
            loss.backward()
            assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_a_random_batch_is_finite_at_the_bound():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(512, 2, 16, generator=g, requires_grad=True)
    loss = SupConLoss(temperature=min_temperature(1024))(z)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_a_temperature_below_the_bound_is_refused_at_start(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--data", "digits", "--temperature", "1e-45", "--batch-size", "256",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--temperature 1e-45 is too small for float32" in err and "512 terms" in err and "--lr" not in err
    assert not out.exists()
    assert min_temperature(512) == pytest.approx(4 * 512 / torch.finfo(torch.float32).max)
