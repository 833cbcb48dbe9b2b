"""Every bad input is refused with a message naming what was received."""
from __future__ import annotations

import math

import pytest
import torch

from contrastkit.losses import MarginTripletLoss, NPairLoss, NTLogisticLoss, NTXentLoss, SupConLoss

PAIR_LOSSES = [NTXentLoss, NTLogisticLoss, MarginTripletLoss, NPairLoss]


@pytest.mark.parametrize("cls", [NTXentLoss, SupConLoss, NTLogisticLoss])
@pytest.mark.parametrize("bad", [0.0, -0.1, math.inf, math.nan])
def test_temperature_must_be_finite_and_positive(cls, bad):
    with pytest.raises(ValueError, match=r"temperature must be finite and > 0, got"):
        cls(temperature=bad)


@pytest.mark.parametrize("cls", [NTXentLoss, SupConLoss, NTLogisticLoss])
@pytest.mark.parametrize("bad", ["0.1", None, True, torch.tensor(0.1)])
def test_temperature_must_be_a_number(cls, bad):
    with pytest.raises(TypeError, match="temperature must be a real number, got"):
        cls(temperature=bad)


def test_margin_and_variant_and_chunk_size():
    with pytest.raises(ValueError, match="margin must be finite and >= 0, got -1.0"):
        MarginTripletLoss(margin=-1.0)
    with pytest.raises(ValueError, match=r"variant must be one of \('out', 'in'\), got 'both'"):
        SupConLoss(variant="both")
    with pytest.raises(TypeError, match="variant must be one of"):
        SupConLoss(variant=1)
    with pytest.raises(ValueError, match="chunk_size must be None or an int >= 1, got 0"):
        NTXentLoss(chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size must be None or an int >= 1, got float 2.0"):
        SupConLoss(chunk_size=2.0)


@pytest.mark.parametrize("cls", PAIR_LOSSES)
def test_pair_inputs(cls):
    loss = cls()
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"z1 must have shape \(N, D\), got 3 dims with shape \(4, 3, 1\)"):
        loss(z[..., None], z)
    with pytest.raises(ValueError, match=r"z1 and z2 must have the same shape \(N, D\), got \(4, 3\) and \(5, 3\)"):
        loss(z, torch.randn(5, 3))
    with pytest.raises(TypeError, match="z2 must be a torch.Tensor of shape \\(N, D\\), got list"):
        loss(z, [[1.0]])
    with pytest.raises(TypeError, match="z1 must be a floating-point tensor, got dtype torch.int64"):
        loss(torch.ones(4, 3, dtype=torch.long), z)
    with pytest.raises(TypeError, match="same dtype, got torch.float32 and torch.float64"):
        loss(z, z.double())
    bad = z.clone()
    bad[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"z2 must be finite, got 1 NaN or infinite value\(s\)"):
        loss(z, bad)
    bad[1, 2] = math.inf
    with pytest.raises(ValueError, match="z1 must be finite"):
        loss(bad, z)
    with pytest.raises(ValueError, match=r"needs at least 2 samples .* got N=1|needs N >= 2 samples .* got N=1"):
        loss(z[:1], z[:1])
    with pytest.raises(ValueError, match="no empty dimension"):
        loss(z[:0], z[:0])


def test_supcon_inputs():
    loss = SupConLoss()
    x = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match=r"features must have shape \(N, V, D\), got 2 dims with shape \(4, 2\)"):
        loss(x[..., 0])
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(4,\) .* got shape \(5,\)"):
        loss(x, torch.arange(5))
    # 2-D labels are multi-hot (N, C): class indices in that shape are refused as such
    with pytest.raises(ValueError, match=r"labels of shape \(4, 1\) are multi-hot .* class indices take shape \(N,\)"):
        loss(x, torch.arange(4)[:, None])
    with pytest.raises(TypeError, match="labels must have an integer dtype .* got torch.float32"):
        loss(x, torch.zeros(4))
    with pytest.raises(TypeError, match="labels must have an integer dtype .* got torch.bool"):
        loss(x, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="labels must be None or an integer torch.Tensor of shape \\(N,\\), got list"):
        loss(x, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="labels must be >= 0, or -1 for an unlabelled sample, got minimum -2"):
        loss(x, torch.tensor([0, -2, 1, 1]))
    with pytest.raises(ValueError, match=r"labels=None needs V >= 2 views .* shape \(4, 1, 3\) with V=1"):
        loss(x[:, :1])
    with pytest.raises(ValueError, match="needs at least 2 samples .* got N=1"):
        loss(x[:1])
    with pytest.raises(ValueError, match=r"N \* V >= 2\), got N=1, V=1"):
        loss(x[:1, :1], torch.tensor([0]))
    with pytest.raises(ValueError, match="features must be finite"):
        loss(torch.full((4, 2, 3), math.nan))
    with pytest.raises(TypeError, match="features must be a floating-point tensor, got dtype torch.int32"):
        loss(torch.ones(4, 2, 3, dtype=torch.int32))
