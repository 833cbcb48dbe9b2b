"""Weighted k-nearest-neighbour classifier on frozen features (the kNN monitor).

Recipe (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric
Instance Discrimination"; used as a cheap per-epoch monitor by SimCLR
reimplementations):

1. L2-normalise train ("memory bank") and test features; similarity is the
   cosine similarity s = q . m.
2. For each test sample take the k most similar memory samples
   (k = 200 by default; clipped to the memory size, minus one with
   ``leave_one_out``).
3. Each neighbour votes for its label with weight exp(s / temperature)
   (temperature 0.1 by default; Wu et al. use 0.07). The predicted class is the
   one with the largest total vote; top-5 counts a hit when the true label is
   among the five classes with the largest votes (top-min(5, C) when C < 5).

The search is exact and chunked over test samples (``chunk_size`` rows of the
similarity matrix at a time), so memory is chunk_size x N_train, never
N_test x N_train. Accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import (
    as_train_test,
    check_positive_float,
    check_positive_int,
    infer_num_classes,
    resolve_device,
)

__all__ = ["knn_accuracy", "knn_predict_scores"]


def knn_predict_scores(
    memory: torch.Tensor,
    memory_labels: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    temperature: float,
    num_classes: int,
    query_offset: int | None = None,
) -> torch.Tensor:
    """Class votes of weighted kNN for one chunk of queries (no input validation).

    Args:
        memory: L2-normalised memory features.
        memory_labels: their labels.
        queries: L2-normalised query features.
        k: neighbours, already clipped to what the memory can give.
        temperature: vote weight exp(s / temperature).
        num_classes: C.
        query_offset: when not None, query row i is memory row ``query_offset + i``
            and is excluded from its own neighbours (leave-one-out).

    Returns:
        Votes per class.

    Shape:
        memory (M, F), memory_labels (M,), queries (Q, F) -> votes (Q, C).
    """
    sim = queries @ memory.T  # (Q, M)
    if query_offset is not None:
        rows = torch.arange(queries.shape[0], device=sim.device)
        sim[rows, rows + query_offset] = float("-inf")
    top_sim, top_idx = sim.topk(k, dim=1)  # (Q, k), (Q, k)
    # Subtracting the per-row maximum leaves the arg-max of the votes unchanged and
    # keeps exp() finite for small temperatures.
    weights = torch.exp((top_sim - top_sim[:, :1]) / temperature)  # (Q, k)
    neighbour_labels = memory_labels[top_idx]  # (Q, k)
    votes = torch.zeros(queries.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    votes.scatter_add_(1, neighbour_labels, weights)  # (Q, C)
    return votes


@torch.no_grad()
def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    leave_one_out: bool = False,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy of a temperature-weighted cosine kNN classifier.

    Args:
        train_feats: memory features.
        train_labels: memory labels (class indices).
        test_feats: query features; with ``leave_one_out`` they must be the
            train features themselves (row i of test is row i of train).
        test_labels: query labels.
        k: neighbours per query (>= 1), clipped to the memory size.
        temperature: vote temperature (> 0).
        num_classes: C; default ``max label + 1`` over train and test.
        chunk_size: queries per similarity block (>= 1).
        leave_one_out: exclude each query from its own neighbours (kNN accuracy
            on the training set itself).
        device: where the search runs (e.g. ``"cuda"``); default: the device of
            ``train_feats``.

    Returns:
        ``{"top1": float, "top5": float | None}``, fractions in [0, 1]; top-5 is None with 5 classes or fewer
        (every query would be a hit).

    Raises:
        TypeError: for non-tensor or wrongly typed inputs.
        ValueError: for mismatched shapes, non-finite features, k < 1,
            temperature <= 0, labels >= num_classes, or ``leave_one_out`` with a
            test set of a different size than the train set, or with a single
            training sample.

    Shape:
        train_feats (M, F), train_labels (M,), test_feats (Q, F), test_labels (Q,).
    """
    memory, memory_labels, queries, query_labels = as_train_test(train_feats, train_labels, test_feats, test_labels)
    k = check_positive_int("k", k)
    temperature = check_positive_float("temperature", temperature)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    num_classes = infer_num_classes(num_classes, memory_labels, query_labels, names=["train_labels", "test_labels"])
    available = memory.shape[0]
    if leave_one_out:
        if queries.shape[0] != memory.shape[0]:
            raise ValueError(
                f"leave_one_out=True needs test_feats to be train_feats (same N); got N_train={memory.shape[0]}, "
                f"N_test={queries.shape[0]}"
            )
        if available < 2:
            raise ValueError("leave_one_out=True needs at least 2 training samples, got 1")
        available -= 1
    k = min(k, available)
    if device is not None:
        memory = memory.to(resolve_device(device))
    memory = F.normalize(memory, dim=1)  # (M, F)
    queries = F.normalize(queries.to(memory.device), dim=1)  # (Q, F)
    memory_labels = memory_labels.to(memory.device)
    query_labels = query_labels.to(memory.device)
    n_top = min(5, num_classes)
    hits1 = 0
    hits5 = 0
    for start in range(0, queries.shape[0], chunk_size):
        q = queries[start : start + chunk_size]  # (Q_c, F)
        y = query_labels[start : start + chunk_size]  # (Q_c,)
        votes = knn_predict_scores(
            memory, memory_labels, q, k, temperature, num_classes, query_offset=start if leave_one_out else None
        )  # (Q_c, C)
        ranked = votes.topk(n_top, dim=1).indices  # (Q_c, n_top)
        hits1 += int((ranked[:, 0] == y).sum())
        hits5 += int((ranked == y[:, None]).any(dim=1).sum())
    n = queries.shape[0]
    return {"top1": hits1 / n, "top5": hits5 / n if num_classes > 5 else None}
