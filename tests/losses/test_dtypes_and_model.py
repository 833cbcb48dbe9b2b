"""Half-precision inputs, float64, and finite gradients through a real model."""
from __future__ import annotations

import math

import pytest
import torch

import contrastkit
from contrastkit.losses import MarginTripletLoss, NPairLoss, NTLogisticLoss, NTXentLoss, SupConLoss

PAIR_LOSSES = [
    NTXentLoss(0.1), NTLogisticLoss(), MarginTripletLoss(0.2), MarginTripletLoss(0.2, semi_hard=True), NPairLoss()
]
SUPCON = [SupConLoss(0.1, "out"), SupConLoss(0.1, "in")]
LABELS = torch.tensor([0, 1, 0, -1, 2, 1, 2, 2])


def _pair(seed=0, N=8, D=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g), torch.randn(N, D, generator=g)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("loss", PAIR_LOSSES, ids=repr)
def test_half_inputs_pair_losses(dtype, loss):
    z1, z2 = _pair()
    want = loss(z1.to(dtype).float(), z2.to(dtype).float())  # same rounded inputs, float32 compute
    x = torch.stack([z1, z2]).to(dtype).requires_grad_(True)
    got = loss(x[0], x[1])
    assert got.dtype == torch.float32  # as torch.autocast returns losses
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(got, x)
    assert grad.dtype == dtype and torch.isfinite(grad.float()).all()
    # And close to the float32 loss of the unrounded inputs.
    assert got.item() == pytest.approx(loss(z1, z2).item(), rel=5e-2, abs=2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("loss", SUPCON, ids=repr)
def test_half_inputs_supcon(dtype, loss):
    x = torch.randn(8, 3, 16, generator=torch.Generator().manual_seed(1))
    xh = x.to(dtype).requires_grad_(True)
    got = loss(xh, LABELS)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, loss(xh.detach().float(), LABELS), rtol=1e-5, atol=1e-5)
    assert got.item() == pytest.approx(loss(x, LABELS).item(), rel=5e-2)
    (grad,) = torch.autograd.grad(got, xh)
    assert grad.dtype == dtype and torch.isfinite(grad.float()).all()


def test_half_extremes_do_not_overflow():
    big = torch.full((4, 2, 8), 60000.0, dtype=torch.float16)
    big[:, 1] = -60000.0
    assert math.isfinite(SupConLoss(0.05)(big).item())
    assert math.isfinite(NTXentLoss(0.05)(big[:, 0], big[:, 1]).item())


@pytest.mark.parametrize("loss", PAIR_LOSSES, ids=repr)
def test_float64_stays_float64(loss):
    z1, z2 = _pair()
    got = loss(z1.double(), z2.double())
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(loss(z1, z2).item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("value", [1e38, 1e-38, 1e-45])
def test_extreme_finite_float32_values(value):
    z1, z2 = _pair(N=5, D=4)
    scaled = NTXentLoss(0.2)(z1 * value, z2 * value)
    if value >= 1e-38:
        torch.testing.assert_close(scaled, NTXentLoss(0.2)(z1, z2), rtol=1e-5, atol=1e-5)
    assert math.isfinite(scaled.item())
    x = torch.stack([z1, z2], 1) * value
    assert math.isfinite(SupConLoss()(x, torch.tensor([0, 0, 1, 1, -1])).item())


LOSS_CALLS = {
    "ntxent": lambda z1, z2, y: NTXentLoss(0.5)(z1, z2),
    "supcon_out": lambda z1, z2, y: SupConLoss(0.1)(torch.stack([z1, z2], 1), y),
    "supcon_in": lambda z1, z2, y: SupConLoss(0.1, "in")(torch.stack([z1, z2], 1), y),
    "ntlogistic": lambda z1, z2, y: NTLogisticLoss()(z1, z2),
    "triplet_sh": lambda z1, z2, y: MarginTripletLoss(semi_hard=True)(z1, z2),
    "npair": lambda z1, z2, y: NPairLoss()(z1, z2),
}


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return contrastkit.build_model("resnet18", cifar_stem=True, width=0.125)


@pytest.mark.parametrize("name", list(LOSS_CALLS))
def test_every_parameter_gets_a_finite_gradient(tiny_model, name):
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    tiny_model.zero_grad(set_to_none=True)
    _, z = tiny_model(torch.cat([x1, x2]))  # (8, D)
    z1, z2 = z.chunk(2)
    loss = LOSS_CALLS[name](z1, z2, torch.tensor([0, 1, 0, -1]))
    assert math.isfinite(loss.item())
    loss.backward()
    for pname, p in tiny_model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, pname
            assert torch.isfinite(p.grad).all(), pname
