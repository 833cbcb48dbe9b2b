"""SupCon L_out with weighted positives, on a tiled kernel of its own: multi-label SupCon, and the momentum contrast
of queries with keys.

How much candidate j is a positive of anchor i is a weight w_ij: 1 for another view of i's own sample; for any other
sample, 1 for the same class (0 for another, or -1: none), or, with multi-hot label sets, the Jaccard overlap
|A_i n A_j| / |A_i u A_j| (0 when both sets are empty). With W_i = sum_j w_ij and L_ij = a_i.c_j / tau::

    l_i = -(1 / W_i) sum_j w_ij log( exp(L_ij) / sum_{a != i} exp(L_ia) ) = lse_i - (1 / W_i) sum_j w_ij L_ij

and d l_i / d L_ij = p_ij - w_ij / W_i (softmax over A(i) minus the normalised weights). With one-hot labels the
weights are 0 or 1 and this is SupCon's L_out exactly.

The anchors a_i are either rows of the candidates themselves (SupCon: the batch's views, gradient to both sides) or
separate queries whose row i pairs with candidate row i, its own key, which is left out of A(i) as a row is left
out of its own (momentum contrast: the candidates are keys, and only the queries take a gradient).

Anchors are taken ``chunk`` rows at a time, like ``_tiled.py``: the weights of a tile are computed from the labels
when the tile is, so memory is a few (chunk, M) tiles plus O(M (D + C)), never an (M, M) matrix. A tile costs three
or four (c x M x D) matmuls (logits, the weighted positive sum, the gradient's row side, and its column side when the
candidates take a gradient) and, for label sets, one (c x M x C) for the overlaps. Each row is shifted by its own
max before ``exp`` (its largest term is then 1, so nothing underflows and nothing is read back from the device).

Memory rows (a queue of past keys, :class:`~contrastkit.losses.MemoryQueue`) are more candidates after the batch's:
they take part in every anchor's denominator and, by their labels, in its positives, and receive no gradient.
"""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from ..runtime import distributed
from ._tiled import default_chunk_size
from ._validation import compute_dtype, computes_in_fp32, normalize

__all__ = ["multilabel_loss", "weighted_supcon"]


def _exp_floor(dtype: torch.dtype) -> float:
    return math.log(torch.finfo(dtype).tiny) + 8.0  # shifted logits below this are clamped (subnormal exps)


def _tile_weights(labels_a: torch.Tensor, sample_a: torch.Tensor, cand_labels: torch.Tensor,
                  cand_sizes: torch.Tensor | None, row_sample: torch.Tensor, self_offset: int, out: torch.Tensor
                  ) -> torch.Tensor:
    """The weights w_ij of a tile of anchors against every candidate, written into ``out``.

    Shape:
        labels_a (c,) class ids or (c, C) label sets, sample_a (c,), cand_labels (M+K,) or (M+K, C),
        cand_sizes (M+K,) for label sets, row_sample (M,) -> out (c, M+K).
    """
    M = row_sample.shape[0]
    if cand_labels.dim() == 1:  # classes: the same label >= 0
        out.copy_(torch.eq(labels_a[:, None], cand_labels[None, :]) & (labels_a[:, None] >= 0))
    else:
        torch.mm(labels_a, cand_labels.t(), out=out)  # (c, M+K) |A_i n A_j|
        union = (labels_a.sum(dim=1)[:, None] + cand_sizes[None, :]).sub_(out).clamp_min_(1.0)  # 0/1 when both empty
        out.div_(union)  # Jaccard overlap
    out[:, :M].masked_fill_(torch.eq(sample_a[:, None], row_sample[None, :]), 1.0)  # views of the anchor's sample
    out.diagonal(self_offset).zero_()  # i is not its own positive
    return out


class _WeightedSupCon(torch.autograd.Function):
    """Sum over anchors with positive weight of l_i, times ``scale``; see the module docstring."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, memory: torch.Tensor, queries: torch.Tensor | None,  # type: ignore[override]
                row_sample: torch.Tensor, row_labels: torch.Tensor, memory_labels: torch.Tensor, temperature: float,
                anchor_start: int, anchor_count: int, scale: float | torch.Tensor, chunk: int, with_grad: bool
                ) -> torch.Tensor:
        (M, D), a0, na = z.shape, anchor_start, anchor_count
        inv_tau, dtype, device = 1.0 / temperature, z.dtype, z.device
        floor, tiny = _exp_floor(dtype), torch.finfo(dtype).tiny
        cand = torch.cat([z, memory])  # (M+K, D)
        cand_labels = torch.cat([row_labels, memory_labels])  # (M+K,) or (M+K, C)
        cand_sizes = cand_labels.sum(dim=1) if cand_labels.dim() == 2 else None  # (M+K,)
        za = z[a0:a0 + na] if queries is None else queries  # (na, D) the anchors
        zs = za * inv_tau  # (na, D)
        lse, positive, weight = (torch.empty(na, dtype=dtype, device=device) for _ in range(3))  # (na,) each
        grad_soft = torch.zeros(M if queries is None else na, D, dtype=dtype, device=device) if with_grad else None
        rows = min(chunk, na)
        tile = torch.empty(rows, cand.shape[0], dtype=dtype, device=device)  # (c, M+K)
        wtile = torch.empty_like(tile)  # (c, M+K)
        for i0 in range(0, na, chunk):
            i1 = min(i0 + chunk, na)
            t, w = tile[: i1 - i0], wtile[: i1 - i0]
            torch.mm(zs[i0:i1], cand.t(), out=t)  # (c, M+K) L_ij
            t.diagonal(a0 + i0).fill_(-math.inf)
            shift = t.amax(dim=1)  # (c,)
            t.sub_(shift[:, None]).clamp_min_(floor).exp_()  # (c, M+K) e_ij <= 1
            t.diagonal(a0 + i0).zero_()
            total = t.sum(dim=1)  # (c,) >= 1
            lse[i0:i1] = total.log().add_(shift)
            _tile_weights(row_labels[a0 + i0:a0 + i1], row_sample[a0 + i0:a0 + i1], cand_labels, cand_sizes,
                          row_sample, a0 + i0, w)
            w_sum = w.sum(dim=1)  # (c,)
            weight[i0:i1] = w_sum
            positive[i0:i1] = (zs[i0:i1] * torch.mm(w, cand)).sum(dim=1)  # (c,) via (c, D) sum_j w_ij c_j
            if not with_grad:
                continue
            valid = w_sum > 0  # (c,)
            a = torch.where(valid, 1.0 / total, torch.zeros_like(total))  # (c,)
            b = torch.where(valid, 1.0 / w_sum.clamp_min(tiny), torch.zeros_like(w_sum))  # (c,)
            t.mul_(a[:, None]).sub_(w.mul_(b[:, None]))  # (c, M+K) p_ij - w_ij / W_i
            row = slice(a0 + i0, a0 + i1) if queries is None else slice(i0, i1)
            grad_soft[row] += torch.mm(t, cand)  # (c, D) row side
            if queries is None:
                grad_soft.addmm_(t[:, :M].t(), za[i0:i1])  # (M, D) column side: the batch's rows only
        per_anchor = torch.where(weight > 0, lse - positive / weight.clamp_min(tiny), torch.zeros_like(lse))  # (na,)
        if with_grad:
            ctx.save_for_backward(grad_soft)
            ctx.factor = (scale, inv_tau, queries is None)
        return per_anchor.sum() * scale

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (grad_soft,) = ctx.saved_tensors
        scale, inv_tau, to_rows = ctx.factor
        grad = grad_soft * (grad_output.to(grad_soft.dtype) * (scale * inv_tau))  # (M, D) or (na, D)
        return (grad if to_rows else None), None, (None if to_rows else grad), *([None] * 9)


def weighted_supcon(rows: torch.Tensor, row_sample: torch.Tensor, row_labels: torch.Tensor,
                    memory: torch.Tensor | None, memory_labels: torch.Tensor | None, *, temperature: float,
                    anchor_start: int, anchor_count: int, scale: float | torch.Tensor, chunk_size: int | None,
                    queries: torch.Tensor | None = None) -> torch.Tensor:
    """Internal entry point of the weighted kernel (inputs validated, normalised, gathered).

    Args:
        rows: the batch's candidate rows (views, or keys).
        row_sample: the sample of each row; rows of one sample are each other's positives.
        row_labels: class ids (-1: none) or multi-hot label sets (in rows' dtype) of each row.
        memory, memory_labels: more candidates (no gradient) and their labels of the same kind; None: none.
        temperature: tau.
        anchor_start, anchor_count: the anchors' rows (this rank's).
        scale: the sum of l_i is multiplied by it (1 / the anchors of all ranks, times the world size).
        chunk_size: anchor rows per tile (None: :func:`~._tiled.default_chunk_size`).
        queries: the anchors, one per row of ``[anchor_start, anchor_start + anchor_count)`` (that row is left out
            of its A(i)); None: the rows themselves.

    Shape:
        rows (M, D), row_sample (M,), row_labels (M,) or (M, C), memory (K, D), queries (anchor_count, D) -> ().
    """
    D = rows.shape[1]
    if memory is None:
        memory = rows.new_zeros(0, D)
    if memory_labels is None:
        memory_labels = (row_labels.new_full((memory.shape[0],), -1) if row_labels.dim() == 1
                         else row_labels.new_zeros(memory.shape[0], row_labels.shape[1]))
    chunk = chunk_size or default_chunk_size(rows.shape[0] + memory.shape[0], rows.device, rows.element_size())
    trained = rows if queries is None else queries
    with_grad = torch.is_grad_enabled() and trained.requires_grad
    return _WeightedSupCon.apply(rows if queries is None else rows.detach(), memory.detach(), queries, row_sample,
                                 row_labels, memory_labels, float(temperature), anchor_start, anchor_count, scale,
                                 int(chunk), with_grad)


def _anchors_with_positive(labels: torch.Tensor, views: int) -> torch.Tensor | int:
    """How many of the batch's rows have a positive of weight > 0: all of them with V >= 2 (each view has its
    sample's other views); with V = 1, those sharing a label with another row (on the device).

    Shape:
        labels (N, C) -> () or an int.
    """
    n = labels.shape[0]
    if views >= 2:
        return n * views
    holders = labels.sum(dim=0)  # (C,) rows holding each label
    shares = (labels * (holders[None, :] - labels)).sum(dim=1) > 0  # (N,) a label held by another row
    return shares.sum().to(labels.dtype)


@computes_in_fp32
def multilabel_loss(features: torch.Tensor, labels: torch.Tensor, *, temperature: float, chunk_size: int | None,
                    gather_distributed: bool, normalize_features: bool, even_batches: bool, sync_free: bool, who: str
                    ) -> torch.Tensor:
    """Mean multi-label SupCon L_out over this rank's anchors (validated inputs; see
    :class:`~contrastkit.losses.SupConLoss`).

    Args:
        features: the views (not yet normalised).
        labels: multi-hot labels.
        temperature, chunk_size: as the loss.
        normalize_features: L2-normalise the views (else raw dot products).
        gather_distributed, even_batches: gather the views and labels of every rank (equal sizes: no exchange).
        sync_free: keep the number of anchors with a positive on the device (none: a NaN loss, not a ValueError).
        who: the calling class, for error messages.

    Raises:
        ValueError: fewer than 2 samples in the batch, or (checked) no anchor with a positive.

    Shape:
        features (N, V, D), labels (N, C) -> ().
    """
    N, V, D = features.shape
    z = normalize(features) if normalize_features else features.to(compute_dtype(features.dtype))  # (N, V, D)
    labels = labels.to(z.dtype)
    world = distributed.get_world_size() if gather_distributed else 1
    start = 0
    if world > 1:
        sizes = [N] * world if even_batches else distributed.gather_sizes(z)
        start = sum(sizes[: distributed.get_rank()])
        z = distributed.gather_with_grad(z, sizes)  # (N_all, V, D)
        labels = distributed.gather_no_grad(labels, sizes)  # (N_all, C)
    n_all = z.shape[0]
    if n_all < 2:
        raise ValueError(f"{who} needs at least 2 samples so that every anchor has a negative, got N={n_all}"
                         + (" over all ranks" if world > 1 else ""))
    num_valid = _anchors_with_positive(labels, V)
    if not sync_free and not isinstance(num_valid, int):
        num_valid = int(num_valid)
        if num_valid == 0:
            raise ValueError(f"{who}: no anchor has a positive (V={V} view(s) and no two of the {n_all} samples "
                             f"share a label); use V >= 2 views or batches with shared labels")
    rows = z.reshape(n_all * V, D)  # (M, D), row n*V + v
    row_sample = torch.arange(n_all, device=z.device).repeat_interleave(V)  # (M,)
    return weighted_supcon(rows, row_sample, labels.repeat_interleave(V, dim=0), None, None,
                           temperature=temperature, anchor_start=start * V, anchor_count=N * V,
                           scale=world / num_valid, chunk_size=chunk_size)
