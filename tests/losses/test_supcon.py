"""SupConLoss against the float64 loop reference, closed forms and invariants."""
from __future__ import annotations

import math

import pytest
import torch

import reference_losses as ref
from contrastkit.losses import NTXentLoss, SupConLoss


def _features(N, V, D, seed, dtype=torch.float64):
    return torch.randn(N, V, D, generator=torch.Generator().manual_seed(seed), dtype=dtype)


LABELS = {
    "none": None,
    "distinct": torch.arange(7),
    "repeats": torch.tensor([0, 1, 0, 2, 1, 0, 3]),
    "partial": torch.tensor([0, -1, 0, 2, -1, 2, 1]),
    "one_class": torch.zeros(7, dtype=torch.long),
    "all_unlabelled": torch.full((7,), -1),
    "big_values": torch.tensor([10**12, 5, 10**12, 5, -1, 7, 7]),
}


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("labels_kind", list(LABELS))
@pytest.mark.parametrize("V", [2, 3])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_matches_loop_reference(variant, labels_kind, V, tau):
    x = _features(7, V, 5, seed=V)
    labels = LABELS[labels_kind]
    got = SupConLoss(tau, variant, chunk_size=4)(x, labels).item()
    assert got == pytest.approx(ref.supcon_loop(x, labels, tau, variant), rel=1e-11, abs=1e-12)


@pytest.mark.parametrize("variant", ["out", "in"])
def test_single_view_with_labels_leaves_out_anchors_without_positive(variant):
    x = _features(6, 1, 4, seed=2)
    labels = torch.tensor([0, 0, 1, 2, 2, -1])  # anchors 2 (label 1) and 5 (-1) have no positive
    got = SupConLoss(0.1, variant)(x, labels).item()
    assert got == pytest.approx(ref.supcon_loop(x, labels, 0.1, variant), rel=1e-11)
    kept = torch.tensor([0, 1, 3, 4])
    # Leaving them out of the anchors is not leaving them out of the batch: they stay negatives.
    assert got != pytest.approx(SupConLoss(0.1, variant)(x[kept], labels[kept]).item(), rel=1e-6)


def test_single_view_without_any_positive_raises():
    with pytest.raises(ValueError, match="no anchor has a positive"):
        SupConLoss()(_features(4, 1, 3, seed=0), torch.tensor([0, 1, 2, -1]))


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_distinct_labels_equal_ntxent(tau):
    x = _features(8, 2, 6, seed=3)
    want = NTXentLoss(tau)(x[:, 0], x[:, 1])
    torch.testing.assert_close(SupConLoss(tau)(x, torch.arange(8) * 3), want)
    torch.testing.assert_close(SupConLoss(tau)(x), want)
    torch.testing.assert_close(SupConLoss(tau, "in")(x), want)


def test_out_equals_in_with_exactly_one_positive():
    x = _features(8, 2, 5, seed=4)
    labels = torch.tensor([4, 1, 7, 0, 2, 9, 3, 5])
    torch.testing.assert_close(SupConLoss(0.2, "out")(x, labels), SupConLoss(0.2, "in")(x, labels))
    x1 = _features(8, 1, 5, seed=5)
    pairs = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # V = 1, each label twice: one positive each
    torch.testing.assert_close(SupConLoss(0.2, "out")(x1, pairs), SupConLoss(0.2, "in")(x1, pairs))


def test_out_and_in_differ_with_several_positives():
    x = _features(6, 2, 5, seed=6)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert SupConLoss(0.2, "out")(x, labels).item() > SupConLoss(0.2, "in")(x, labels).item()  # Jensen


@pytest.mark.parametrize("variant", ["out", "in"])
def test_permutation_invariance(variant):
    x = _features(9, 3, 4, seed=7)
    labels = torch.tensor([0, 1, 0, -1, 2, 1, -1, 2, 2])
    loss = SupConLoss(0.15, variant, chunk_size=5)
    base = loss(x, labels)
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(9, generator=g)
    torch.testing.assert_close(loss(x[perm], labels[perm]), base)
    torch.testing.assert_close(loss(x[:, torch.randperm(3, generator=g)], labels), base)  # views
    torch.testing.assert_close(loss(x, torch.where(labels >= 0, labels * 10 + 3, labels)), base)  # relabel


@pytest.mark.parametrize("variant", ["out", "in"])
def test_unlabelled_samples_act_as_their_own_class(variant):
    x = _features(7, 2, 4, seed=8)
    labels = torch.tensor([0, -1, 0, 1, -1, 1, -1])
    fresh = torch.tensor([0, 100, 0, 1, 101, 1, 102])
    torch.testing.assert_close(SupConLoss(0.1, variant)(x, labels), SupConLoss(0.1, variant)(x, fresh))
    torch.testing.assert_close(SupConLoss(0.1, variant)(x, torch.full((7,), -1)), SupConLoss(0.1, variant)(x))


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("V", [1, 2, 4])
def test_identical_embeddings_closed_form(variant, V):
    """All logits equal: l_i = log|A(i)| = log(VN - 1) for L_out and L_in."""
    N = 5
    x = torch.ones(N, V, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1])
    loss = SupConLoss(0.05, variant)(x, labels)
    assert loss.item() == pytest.approx(math.log(N * V - 1), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0])
def test_one_class_batch_is_finite(variant, tau):
    x = _features(6, 2, 4, seed=9, dtype=torch.float32).requires_grad_(True)
    labels = torch.full((6,), 3)
    loss = SupConLoss(tau, variant)(x, labels)
    (grad,) = torch.autograd.grad(loss, x)
    assert math.isfinite(loss.item()) and torch.isfinite(grad).all()
    assert loss.item() == pytest.approx(ref.supcon_loop(x, labels, tau, variant), rel=1e-5)


def test_zero_rows_are_finite():
    x = torch.zeros(4, 2, 3, requires_grad=True)
    loss = SupConLoss()(x, torch.tensor([0, 1, 0, 1]))
    (grad,) = torch.autograd.grad(loss, x)
    assert loss.item() == pytest.approx(math.log(7), rel=1e-6)
    assert torch.isfinite(grad).all()


def test_labels_on_another_integer_dtype_and_device_are_accepted():
    x = _features(4, 2, 3, seed=10)
    want = SupConLoss()(x, torch.tensor([0, 1, 0, 1]))
    torch.testing.assert_close(SupConLoss()(x, torch.tensor([0, 1, 0, 1], dtype=torch.int32)), want)
    torch.testing.assert_close(SupConLoss()(x, torch.tensor([0, 1, 0, 1], dtype=torch.uint8)), want)


@pytest.mark.parametrize("V", [2, 3])
def test_one_sample_raises_with_and_without_labels(V):
    """One sample has no negative: the same ValueError with labels (it used to return ~0) as without."""
    x = _features(1, V, 4, seed=0)
    for labels in (None, torch.tensor([3]), torch.tensor([-1])):
        with pytest.raises(ValueError, match="needs at least 2 samples so that every anchor has a negative, got N=1"):
            SupConLoss()(x, labels)
    assert SupConLoss()(_features(2, V, 4, seed=0), torch.tensor([3, 3])).item() > 0  # two samples of one class
