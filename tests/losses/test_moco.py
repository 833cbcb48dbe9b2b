"""MomentumContrastLoss (issue 30): queries against the batch's keys plus a queue, against the float64 loop over
batch + queue (values and gradients), no gradient to keys or queue, SupCon's positives, and bad input."""
from __future__ import annotations

import pytest
import torch

import reference_losses as ref
from contrastkit.losses import MomentumContrastLoss, NTXentLoss, SupConLoss


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


LABELS = {  # batch labels (N = 6), memory labels (K = 9)
    "none": (None, None),
    "classes": (torch.tensor([0, 1, 0, 2, 1, -1]), torch.tensor([2, 0, 0, -1, 5, 1, 2, 2, 0])),
    "unlabelled_memory": (torch.tensor([0, 1, 0, 2, 1, -1]), None),
    "label_sets": (torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 1]]),
                   torch.randint(0, 2, (9, 3), generator=torch.Generator().manual_seed(5))),
}


@pytest.mark.parametrize("kind", list(LABELS))
@pytest.mark.parametrize("V", [2, 3])
@pytest.mark.parametrize("with_memory", [False, True])
@pytest.mark.parametrize("chunk", [4, None])
def test_matches_the_loop_over_batch_keys_plus_queue(kind, V, with_memory, chunk):
    labels, memory_labels = LABELS[kind]
    q, k = _randn(6, V, 5, seed=V), _randn(6, V, 5, seed=10 + V)
    memory = _randn(9, 5, seed=20) if with_memory else None
    memory_labels = memory_labels if with_memory else None
    got = MomentumContrastLoss(0.2, chunk_size=chunk)(q, k, labels, memory, memory_labels)
    want = ref.supcon_weighted_loop(q, labels, 0.2, memory, memory_labels, keys=k)
    assert got.item() == pytest.approx(want.item(), rel=1e-11, abs=1e-12)


@pytest.mark.parametrize("kind", list(LABELS))
def test_only_the_queries_take_a_gradient_and_it_matches_the_loop(kind):
    labels, memory_labels = LABELS[kind]
    q = _randn(6, 2, 5, seed=1).requires_grad_(True)
    k = _randn(6, 2, 5, seed=2).requires_grad_(True)
    memory = _randn(9, 5, seed=3).requires_grad_(True)
    MomentumContrastLoss(0.3, chunk_size=5)(q, k, labels, memory, memory_labels).backward()
    q_ref = q.detach().clone().requires_grad_(True)
    ref.supcon_weighted_loop(q_ref, labels, 0.3, memory.detach(), memory_labels, keys=k.detach()).backward()
    torch.testing.assert_close(q.grad, q_ref.grad, rtol=1e-9, atol=1e-12)
    assert k.grad is None and memory.grad is None


def test_keys_equal_to_queries_give_supcon_without_the_own_view():
    """With keys = queries and no memory, the candidates are SupCon's batch: the loss is SupCon L_out's value (the
    gradient differs: only the anchors' side)."""
    x = _randn(7, 2, 6, seed=4)
    labels = torch.tensor([0, 1, 0, 2, 1, 2, 3])
    assert MomentumContrastLoss(0.1)(x, x, labels).item() == pytest.approx(SupConLoss(0.1)(x, labels).item(),
                                                                           rel=1e-12)
    assert MomentumContrastLoss(0.5)(x, x).item() == pytest.approx(NTXentLoss(0.5)(x[:, 0], x[:, 1]).item(),
                                                                   rel=1e-12)


def test_float32_unchecked_matches():
    q, k, memory = _randn(6, 2, 16, seed=5), _randn(6, 2, 16, seed=6), _randn(12, 16, seed=7)
    labels, memory_labels = torch.tensor([0, 1, 0, 2, 1, 1]), torch.randint(-1, 3, (12,))
    want = MomentumContrastLoss(0.1)(q, k, labels, memory, memory_labels).item()
    got = MomentumContrastLoss(0.1, check_values=False, even_batches=True)(
        q.float(), k.float(), labels, memory.float(), memory_labels).item()
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("args, match", [
    ((_randn(6, 1, 4, seed=0), _randn(6, 1, 4, seed=1)), "V >= 2"),
    ((_randn(6, 2, 4, seed=0), _randn(5, 2, 4, seed=1)), "keys must have the queries' shape"),
    ((_randn(1, 2, 4, seed=0), _randn(1, 2, 4, seed=1)), "at least 2 samples"),
    ((_randn(6, 2, 4, seed=0), _randn(6, 2, 4, seed=1), None, _randn(3, 5, seed=2)), "D=5"),
    ((_randn(6, 2, 4, seed=0), _randn(6, 2, 4, seed=1), torch.zeros(5, dtype=torch.long)), r"\(6,\)"),
])
def test_bad_input_is_refused(args, match):
    with pytest.raises(ValueError, match=match):
        MomentumContrastLoss(0.2)(*args)


def test_memory_labels_of_another_kind_are_refused():
    q, k = _randn(6, 2, 4, seed=0), _randn(6, 2, 4, seed=1)
    with pytest.raises(ValueError, match="C=3"):
        MomentumContrastLoss(0.1)(q, k, LABELS["label_sets"][0], _randn(5, 4, seed=2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="need labels for the batch"):
        MomentumContrastLoss(0.1)(q, k, None, _randn(5, 4, seed=2), torch.zeros(5, dtype=torch.long))
