"""check_values=False: the losses' device-only path equals the checked one (values and gradients); label grouping."""
from __future__ import annotations

import pytest
import torch

from contrastkit.losses import NTXentLoss, SupConLoss
from contrastkit.losses._contrastive import group_ids

LABELS = {
    "repeats": [0, 1, 2, 0, 1, 2, 0, 1, 7, 7],
    "unlabelled": [3, -1, 1, 3, -1, 1, 9, -1, -1, 1],
    "large_values": [10**12, -1, 5, 10**12, 5, -1, 123456789, 0, 0, 5],
    "one_class": [4] * 10,
}


@pytest.mark.parametrize("kind", list(LABELS))
def test_grouping_puts_equal_labels_together_and_each_unlabelled_alone(kind):
    labels = torch.tensor(LABELS[kind])
    ids, g = group_ids(labels, len(labels), labels.device)
    assert g == len(labels) and int(ids.min()) >= 0 and int(ids.max()) < g
    same = labels[:, None] == labels[None, :]
    labelled = labels >= 0
    want = same & labelled[:, None] & labelled[None, :] | torch.eye(len(labels), dtype=torch.bool)
    assert torch.equal(ids[:, None] == ids[None, :], want)


@pytest.mark.parametrize("kind", list(LABELS))
@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("V", [1, 2, 3])
@pytest.mark.parametrize("chunk", [None, 3])
def test_sync_free_supcon_equals_the_checked_loss(kind, variant, V, chunk):
    labels = torch.tensor(LABELS[kind])
    g = torch.Generator().manual_seed(V * 7 + len(kind))
    feats = torch.randn(len(labels), V, 5, generator=g, dtype=torch.float64)
    results = []
    for check in (True, False):
        x = feats.clone().requires_grad_(True)
        loss = SupConLoss(0.2, variant, chunk_size=chunk, check_values=check)(x, labels)
        (grad,) = torch.autograd.grad(loss, x)
        results.append((loss, grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tau", [0.01, 0.03, 0.0434])
@pytest.mark.parametrize("variant, normalize", [("out", True), ("in", True), ("in", False)])
def test_unchecked_small_tau_equals_the_checked_loss(tau, dtype, variant, normalize):
    """Where the checked kernel searches for underflowing rows (a device read: tau < 0.0435, or L_in without l2
    normalisation), the unchecked one shifts rows by their max, and L_in's positives by theirs: same loss and
    gradient, NT-Xent and labelled SupCon alike."""
    g = torch.Generator().manual_seed(int(tau * 1e4))
    feats = torch.randn(24, 2, 6, generator=g, dtype=torch.float64) * (1.0 if normalize else 3.0)
    feats[:4] = -feats[4:8]  # antipodal pairs: the smallest terms there are
    labels = torch.randint(-1, 5, (24,), generator=g)
    makes = [lambda c: (lambda x: SupConLoss(tau, variant, chunk_size=7, check_values=c, normalize=normalize)(x, labels))]
    if variant == "out" and normalize:
        makes.append(lambda c: (lambda x: NTXentLoss(tau, chunk_size=7, check_values=c)(x[:, 0], x[:, 1])))
    for make in makes:
        results = []
        for check in (True, False):
            x = feats.to(dtype).requires_grad_(True)
            loss = make(check)(x)
            (grad,) = torch.autograd.grad(loss, x)
            results.append((loss, grad))
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        scale = float(results[0][1].abs().max())
        torch.testing.assert_close(results[1][0], results[0][0], rtol=tol, atol=tol)
        torch.testing.assert_close(results[1][1], results[0][1], rtol=100 * tol, atol=10 * tol * scale)
        assert torch.isfinite(results[1][1]).all()


def test_sync_free_gradcheck_float64():
    labels = torch.tensor([0, 2, -1, 0, 2, 5])
    x = torch.randn(6, 2, 4, dtype=torch.float64, requires_grad=True)
    for variant in ("out", "in"):
        loss = SupConLoss(0.3, variant, chunk_size=4, check_values=False)
        assert torch.autograd.gradcheck(lambda f: loss(f, labels), (x,))


def test_no_positive_is_a_nan_loss_instead_of_an_error():
    feats = torch.randn(4, 1, 3)
    labels = torch.tensor([0, 1, 2, -1])  # V = 1, every label once: no anchor has a positive
    with pytest.raises(ValueError, match="no anchor has a positive"):
        SupConLoss(check_values=True)(feats, labels)
    assert torch.isnan(SupConLoss(check_values=False)(feats, labels))


def test_invalid_labels_are_only_refused_when_checked():
    feats = torch.randn(4, 2, 3)
    labels = torch.tensor([0, -5, 1, 0])
    with pytest.raises(ValueError, match="got minimum -5"):
        SupConLoss(check_values=True)(feats, labels)
    # unchecked, any negative label counts as unlabelled (documented)
    unchecked = SupConLoss(check_values=False)(feats, labels)
    torch.testing.assert_close(unchecked, SupConLoss()(feats, torch.tensor([0, -1, 1, 0])))


def test_check_values_false_keeps_shape_and_dtype_checks():
    with pytest.raises(ValueError, match="labels must have shape"):
        SupConLoss(check_values=False)(torch.randn(4, 2, 3), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer dtype"):
        SupConLoss(check_values=False)(torch.randn(4, 2, 3), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(TypeError, match="check_values must be True or False"):
        NTXentLoss(check_values="no")
