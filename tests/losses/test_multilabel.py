"""Multi-label SupCon (issue 30): SupConLoss with (N, C) multi-hot labels against the float64 loop (Jaccard-weighted
positives, two views of a sample weigh 1), against SupCon on one-hot labels, and bad input (with a queue of keys:
tests/losses/test_moco.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import reference_losses as ref
from contrastkit.losses import SupConLoss


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# 7 samples, 4 labels: overlapping sets, an identical pair, two empty sets, a disjoint one
MULTI_HOT = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0],
                          [1, 0, 1, 1]])


@pytest.mark.parametrize("V", [1, 2, 3])
@pytest.mark.parametrize("tau", [0.07, 0.5])
@pytest.mark.parametrize("chunk", [3, None])
def test_matches_the_loop(V, tau, chunk):
    x = _randn(7, V, 5, seed=V)
    got = SupConLoss(tau, chunk_size=chunk)(x, MULTI_HOT)
    assert got.item() == pytest.approx(ref.supcon_weighted_loop(x, MULTI_HOT, tau).item(), rel=1e-11, abs=1e-12)


def test_gradient_matches_the_loop():
    x = _randn(7, 2, 5, seed=4).requires_grad_(True)
    SupConLoss(0.2, chunk_size=4)(x, MULTI_HOT.bool()).backward()
    x_ref = x.detach().clone().requires_grad_(True)
    ref.supcon_weighted_loop(x_ref, MULTI_HOT, 0.2).backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("V", [1, 2, 3])
def test_one_hot_labels_equal_supcon(V):
    """One-hot labels: every weight is 0 or 1, and the loss and its gradient are today's SupCon L_out."""
    classes = torch.tensor([0, 2, 0, 1, 2, 2, 3, 0])
    x1 = _randn(8, V, 6, seed=V).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    multi = SupConLoss(0.1, chunk_size=5)(x1, F.one_hot(classes, 5))
    single = SupConLoss(0.1, chunk_size=5)(x2, classes)
    multi.backward()
    single.backward()
    assert multi.item() == pytest.approx(single.item(), rel=1e-12)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-14)


def test_empty_label_sets_have_their_own_views_only():
    """All sets empty: every other sample weighs 0, so the loss is SupCon without labels."""
    x = _randn(6, 2, 5, seed=5)
    got = SupConLoss(0.3)(x, torch.zeros(6, 3))
    assert got.item() == pytest.approx(SupConLoss(0.3)(x).item(), rel=1e-12)


def test_unchecked_float32_matches():
    x = _randn(7, 2, 16, seed=8)
    want = SupConLoss(0.1)(x, MULTI_HOT).item()
    got = SupConLoss(0.1, check_values=False, even_batches=True)(x.float(), MULTI_HOT.float()).item()
    assert got == pytest.approx(want, rel=1e-5)


def test_one_view_without_shared_labels_raises():
    with pytest.raises(ValueError, match="no anchor has a positive"):
        SupConLoss(0.1)(_randn(3, 1, 4, seed=0), torch.eye(3))


@pytest.mark.parametrize("labels, kwargs, match", [
    (MULTI_HOT, {"variant": "in"}, "L_out"),
    (MULTI_HOT * 2, {}, r"shape \(7, 4\) are multi-hot .* only 0 and 1"),
    (MULTI_HOT[:5], {}, r"\(7, C\)"),
    (torch.zeros(7, 0), {}, "C >= 1"),
])
def test_bad_multi_hot_labels(labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SupConLoss(0.1, **kwargs)(_randn(7, 2, 4, seed=0), labels)
