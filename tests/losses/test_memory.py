"""SupConLoss over the batch plus memory rows (a queue of keys; issue 30) against the float64 loop over batch +
memory: values, gradients, no gradient to the memory, the tiles, and bad input."""
from __future__ import annotations

import pytest
import torch

import reference_losses as ref
from contrastkit.losses import SupConLoss


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


MEMORY_LABELS = {  # batch labels, memory labels (K = 9)
    "none": (None, None),
    "classes": (torch.tensor([0, 1, 0, 2, 1, -1]), torch.tensor([2, 0, 0, -1, 5, 1, 2, 2, 0])),
    "unlabelled_memory": (torch.tensor([0, 1, 0, 2, 1, -1]), None),
}


@pytest.mark.parametrize("kind", list(MEMORY_LABELS))
@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("V", [2, 3])
@pytest.mark.parametrize("chunk", [4, None])
def test_batch_plus_memory_matches_the_loop(kind, variant, V, chunk):
    labels, memory_labels = MEMORY_LABELS[kind]
    x, memory = _randn(6, V, 5, seed=V), _randn(9, 5, seed=10 + V)
    got = SupConLoss(0.2, variant, chunk_size=chunk)(x, labels, memory, memory_labels)
    want = ref.supcon_weighted_loop(x, labels, 0.2, memory, memory_labels, variant)
    assert got.item() == pytest.approx(want.item(), rel=1e-11, abs=1e-12)


@pytest.mark.parametrize("kind", list(MEMORY_LABELS))
@pytest.mark.parametrize("variant", ["out", "in"])
def test_gradients_match_the_loop_and_skip_the_memory(kind, variant):
    labels, memory_labels = MEMORY_LABELS[kind]
    x = _randn(6, 2, 5, seed=1).requires_grad_(True)
    memory = _randn(9, 5, seed=2).requires_grad_(True)  # a queue never takes a gradient, even if it could
    SupConLoss(0.3, variant, chunk_size=5)(x, labels, memory, memory_labels).backward()
    x_ref = x.detach().clone().requires_grad_(True)
    ref.supcon_weighted_loop(x_ref, labels, 0.3, memory.detach(), memory_labels, variant).backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-12)
    assert memory.grad is None


def test_single_view_positives_come_from_the_memory():
    """V = 1: anchors 0 and 1 have no other batch row of their class, but the memory holds their classes."""
    x, memory = _randn(4, 1, 6, seed=3), _randn(5, 6, seed=4)
    labels, memory_labels = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 7, 7, -1])
    got = SupConLoss(0.1)(x, labels, memory, memory_labels)
    want = ref.supcon_weighted_loop(x, labels, 0.1, memory, memory_labels)
    assert got.item() == pytest.approx(want.item(), rel=1e-11)
    # without the memory's positives only anchors 2 and 3 count
    assert got.item() != pytest.approx(SupConLoss(0.1)(x, labels).item(), rel=1e-6)


def test_memory_adds_negatives_to_ntxent():
    """Without labels the memory rows are negatives only: the loss grows with them, and K = 0 is no memory."""
    x = _randn(8, 2, 6, seed=5)
    plain = SupConLoss(0.5)(x)
    assert SupConLoss(0.5)(x, None, _randn(0, 6, seed=0)).item() == plain.item()
    assert SupConLoss(0.5)(x, None, _randn(64, 6, seed=6)).item() > plain.item()


def test_float32_and_sync_free_match_the_checked_float64():
    x, memory = _randn(6, 2, 8, seed=7), _randn(12, 8, seed=8)
    labels, memory_labels = torch.tensor([0, 1, 0, 2, 1, 1]), torch.randint(-1, 3, (12,),
                                                                            generator=torch.Generator().manual_seed(0))
    want = SupConLoss(0.1)(x, labels, memory, memory_labels).item()
    free = SupConLoss(0.1, check_values=False, even_batches=True)
    assert free(x.float(), labels, memory.float(), memory_labels).item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("memory, memory_labels, labels, match", [
    (_randn(5, 4, seed=0), None, None, "D=4"),
    (_randn(5, 8, seed=0), torch.zeros(5, dtype=torch.long), None, "need labels for the batch"),
    (_randn(5, 8, seed=0), torch.zeros(4, dtype=torch.long), torch.zeros(6, dtype=torch.long), r"\(5,\)"),
    (torch.tensor([[float("nan")] * 8]), None, None, "finite"),
    (None, torch.zeros(5, dtype=torch.long), None, "without memory"),
])
def test_bad_memory_is_refused(memory, memory_labels, labels, match):
    with pytest.raises(ValueError, match=match):
        SupConLoss(0.1)(_randn(6, 2, 8, seed=1), labels, memory, memory_labels)


def test_memory_of_integers_is_refused():
    with pytest.raises(TypeError, match="floating"):
        SupConLoss(0.1)(_randn(6, 2, 8, seed=1), None, torch.zeros(5, 8, dtype=torch.long))
