"""Momentum contrast: queries against keys of a momentum encoder, the batch's and a queue's (MoCo), with SupCon's
positives."""
from __future__ import annotations

import torch
from torch import nn

from ..runtime import distributed
from ._validation import (check_chunk_size, check_embeddings, check_flag, check_labels, check_memory,
                          check_multi_hot, check_temperature, computes_in_fp32, compute_dtype, normalize)
from ._weighted import weighted_supcon

__all__ = ["MomentumContrastLoss"]


class MomentumContrastLoss(nn.Module):
    """Queries of the trained network contrasted with keys of its momentum copy (MoCo, He et al. 2020, eq. 1;
    MoCo v3's form, in which a batch's own keys are candidates too), over the batch plus a memory of past keys.

    The batch holds N samples with V >= 2 views each: a query and a key per view. For the query of view v of sample
    n, A(i) is every key of the batch but its own (view v of sample n) and every memory row; its positives are the
    keys of its sample's other views (weight 1) and, with labels, every key of its class (SupCon's memory-based
    variant), or, with (N, C) multi-hot label sets, every key weighted by the Jaccard overlap of the label sets
    (as :class:`SupConLoss`). With L_ij = q_i.k_j / tau and weights w_ij::

        l_i = -(1 / sum_p w_ip) sum_p w_ip log( exp(L_ip) / sum_{a in A(i)} exp(L_ia) )

    averaged over the VN queries (each has a positive: its sample's other views). Only the queries receive a
    gradient: the keys come from a network that is not trained by it, and the memory holds past keys.

    Queries and keys come from two networks that differ only by the momentum average, so a drift of the trained
    network's outputs moves the positives (keys) and the negatives (keys) alike: nothing rewards running away from
    the queue. (Contrasting queries with queries and queued keys alike would: a query can then lower every queued
    similarity by moving away from where the slower copy was, which on this library's small CPU runs fell below
    the untrained encoder.)

    Computed by the weighted tiled kernel of ``_weighted.py``: memory O(chunk * (VN + K) + (VN + K) D), and no
    read-back from the device. Distributed: the keys and labels of every rank are gathered (without gradient), so
    every rank's queries meet the global batch's keys; the memory must be the same on every rank
    (:class:`MemoryQueue`); with DDP's gradient averaging, loss and gradients equal one process holding the whole
    batch.

    Args:
        temperature: tau > 0 (MoCo: 0.07, MoCo v2: 0.2).
        chunk_size: query rows per tile; None: ~16 MiB tiles on CPU, ~256 MiB on CUDA.
        gather_distributed: gather the keys and labels of every rank when distributed.
        normalize: L2-normalise queries, keys and memory (cosine similarity); False: raw dot products.
        check_values: refuse non-finite inputs and labels out of range (reads the device); False skips that.
        even_batches: every rank passes the same N (no size exchange before the gathers).

    Raises:
        TypeError, ValueError: a bad setting, as for :class:`SupConLoss`.

    Shape:
        queries (N, V, D), keys (N, V, D), labels (N,) / (N, C) / None, memory (K, D), memory_labels (K,) or
        (K, C) -> scalar.
    """

    def __init__(self, temperature: float = 0.2, chunk_size: int | None = None, gather_distributed: bool = True,
                 normalize: bool = True, check_values: bool = True, even_batches: bool = False) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.chunk_size = check_chunk_size(chunk_size)
        self.gather_distributed = bool(gather_distributed)
        self.normalize = check_flag("normalize", normalize)
        self.check_values = check_flag("check_values", check_values)
        self.even_batches = check_flag("even_batches", even_batches)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, chunk_size={self.chunk_size}"

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over the queries.

        Raises:
            TypeError: not floating tensors; class labels not integers.
            ValueError: shapes that do not match, V < 2, fewer than 2 samples over all ranks, bad labels or
                memory (as :class:`SupConLoss`), non-finite values (checked).

        Shape:
            queries (N, V, D), keys (N, V, D), labels (N,) or (N, C), memory (K, D) -> ().
        """
        queries = check_embeddings("queries", queries, "NVD", self.check_values)
        keys = check_embeddings("keys", keys, "NVD", self.check_values)
        N, V, D = queries.shape
        if keys.shape != queries.shape:
            raise ValueError(f"keys must have the queries' shape {tuple(queries.shape)}, got {tuple(keys.shape)}")
        if V < 2:
            raise ValueError(f"{type(self).__name__} needs V >= 2 views per sample (a query's positive is the key of "
                             f"another view of its sample), got V={V}")
        if isinstance(labels, torch.Tensor) and labels.dim() == 2:
            labels = check_multi_hot(labels, N, queries.device, self.check_values)
        elif labels is not None:
            labels = check_labels(labels, N, queries.device, self.check_values)
        memory, memory_labels = check_memory(memory, memory_labels, D, labels, queries.device, self.check_values)
        return _momentum_contrast(queries, keys, labels, memory, memory_labels, self)


@computes_in_fp32
def _momentum_contrast(queries: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor | None,
                       memory: torch.Tensor | None, memory_labels: torch.Tensor | None,
                       loss: MomentumContrastLoss) -> torch.Tensor:
    """Normalise, gather the keys and labels of every rank, and run the weighted kernel (validated inputs).

    Shape:
        queries (N, V, D), keys (N, V, D), labels (N,) or (N, C), memory (K, D) -> ().
    """
    N, V, D = queries.shape
    dtype = compute_dtype(queries.dtype)
    prepare = normalize if loss.normalize else (lambda x: x.to(dtype))
    q, k = prepare(queries), prepare(keys.detach())  # (N, V, D) each
    memory = None if memory is None else prepare(memory.detach())  # (K, D)
    if labels is None:  # every sample its own class: positives are the sample's other views only
        labels = torch.full((N,), -1, dtype=torch.long, device=q.device)
    elif labels.dim() == 2:
        labels = labels.to(dtype)
        memory_labels = None if memory_labels is None else memory_labels.to(dtype)
    world = distributed.get_world_size() if loss.gather_distributed else 1
    start = 0
    if world > 1:
        sizes = [N] * world if loss.even_batches else distributed.gather_sizes(k)
        start = sum(sizes[: distributed.get_rank()])
        k = distributed.gather_no_grad(k, sizes)  # (N_all, V, D)
        labels = distributed.gather_no_grad(labels, sizes)  # (N_all,) or (N_all, C)
    n_all = k.shape[0]
    if n_all < 2:
        raise ValueError(f"{type(loss).__name__} needs at least 2 samples so that every query has a negative key, "
                         f"got N={n_all}" + (" over all ranks" if world > 1 else ""))
    row_sample = torch.arange(n_all, device=k.device).repeat_interleave(V)  # (M,)
    return weighted_supcon(k.reshape(n_all * V, D), row_sample, labels.repeat_interleave(V, dim=0), memory,
                           memory_labels, temperature=loss.temperature, anchor_start=start * V, anchor_count=N * V,
                           scale=world / (n_all * V), chunk_size=loss.chunk_size, queries=q.reshape(N * V, D))
