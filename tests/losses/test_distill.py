"""DistillationLoss (SimCLRv2 Sec. 2.3) against a slow float64 loop, closed forms, and its validation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.losses import DistillationLoss


def slow_distill(student, teacher, temperature, labels=None, labelled_weight=0.0) -> float:
    """The loss written out sample by sample and class by class, in Python floats."""
    s, t = student.double().tolist(), teacher.double().tolist()
    total = 0.0
    for si, ti in zip(s, t):
        zt = [v / temperature for v in ti]
        zs = [v / temperature for v in si]
        mt, ms = max(zt), max(zs)
        norm_t = sum(math.exp(v - mt) for v in zt)
        log_norm_s = ms + math.log(sum(math.exp(v - ms) for v in zs))
        total -= sum(math.exp(a - mt) / norm_t * (b - log_norm_s) for a, b in zip(zt, zs))
    distill = total / len(s)
    if not labelled_weight:
        return distill
    nll = []
    for si, y in zip(s, labels.tolist()):
        if y >= 0:
            m = max(si)
            nll.append(-(si[y] - m - math.log(sum(math.exp(v - m) for v in si))))
    supervised = sum(nll) / len(nll) if nll else 0.0
    return (1 - labelled_weight) * distill + labelled_weight * supervised


@pytest.mark.parametrize("temperature", [0.1, 1.0, 4.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_slow_reference_on_random_logits(temperature, seed):
    g = torch.Generator().manual_seed(seed)
    s = 3 * torch.randn(7, 5, generator=g, dtype=torch.float64)
    t = 3 * torch.randn(7, 5, generator=g, dtype=torch.float64)
    got = DistillationLoss(temperature)(s, t)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(slow_distill(s, t, temperature), rel=1e-12, abs=1e-12)


def test_matches_slow_reference_with_labelled_loss():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([2, -1, 0, -1, -1, 3])
    for weight in (0.0, 0.3, 1.0):
        got = DistillationLoss(2.0, labelled_weight=weight)(s, t, labels)
        assert float(got) == pytest.approx(slow_distill(s, t, 2.0, labels, weight), rel=1e-12)
    none_labelled = torch.full((6,), -1)
    assert float(DistillationLoss(2.0, labelled_weight=0.5)(s, t, none_labelled)) == pytest.approx(
        0.5 * slow_distill(s, t, 2.0), rel=1e-12)


def test_hand_placed_logits_closed_forms():
    # identical student and teacher: the loss is the entropy of the softened distribution
    t = torch.tensor([[math.log(1.0), math.log(3.0)]], dtype=torch.float64)  # softmax (1/4, 3/4) at tau = 1
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert float(DistillationLoss(1.0)(t.clone(), t)) == pytest.approx(entropy, rel=1e-12)
    # uniform student over C classes: log C whatever the teacher
    assert float(DistillationLoss(0.5)(torch.zeros(3, 4, dtype=torch.float64),
                                       torch.randn(3, 4, dtype=torch.float64))) == pytest.approx(math.log(4))


def test_very_low_temperature_is_cross_entropy_against_teacher_hard_labels():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    tau = 1e-4
    hard = t.argmax(dim=1)
    got = DistillationLoss(tau)(s, t)
    assert torch.isfinite(got)
    assert float(got) == pytest.approx(float(F.cross_entropy(s / tau, hard)), rel=1e-5)


def test_gradients_reach_the_student_only_and_invariances():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(8, 3, generator=g, requires_grad=True)
    t = torch.randn(8, 3, generator=g, requires_grad=True)
    loss = DistillationLoss(2.0)(s, t)
    loss.backward()
    assert t.grad is None and s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    perm = torch.randperm(8, generator=g)
    assert torch.allclose(DistillationLoss(2.0)(s[perm], t[perm]), loss)
    # the same shift of every class's logit changes nothing (softmax invariance)
    assert torch.allclose(DistillationLoss(2.0)(s + 5.0, t - 3.0), loss, atol=1e-6)
    half = DistillationLoss(2.0)(s.detach().bfloat16(), t.detach().bfloat16())
    assert half.dtype == torch.float32


def test_validation_messages():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        DistillationLoss(0.0)
    with pytest.raises(ValueError, match=r"labelled_weight must be in \[0, 1\]"):
        DistillationLoss(1.0, labelled_weight=1.5)
    with pytest.raises(ValueError, match="labelled_weight must be finite and >= 0"):
        DistillationLoss(1.0, labelled_weight=-0.1)
    with pytest.raises(ValueError, match="same shape"):
        DistillationLoss()(s, torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        DistillationLoss()(s[0], t[0])
    with pytest.raises(ValueError, match="C >= 2"):
        DistillationLoss()(s[:, :1], t[:, :1])
    with pytest.raises(TypeError, match="same dtype"):
        DistillationLoss()(s, t.double())
    with pytest.raises(ValueError, match="must be finite"):
        DistillationLoss()(s, t.masked_fill(torch.eye(4, 3, dtype=torch.bool), float("nan")))
    with pytest.raises(ValueError, match="needs labels"):
        DistillationLoss(labelled_weight=0.5)(s, t)
    with pytest.raises(ValueError, match="must be < C=3"):
        DistillationLoss(labelled_weight=0.5)(s, t, torch.tensor([0, 1, 3, -1]))
    with pytest.raises(ValueError, match=r"shape \(N,\) = \(4,\)"):
        DistillationLoss(labelled_weight=0.5)(s, t, torch.tensor([0, 1]))
