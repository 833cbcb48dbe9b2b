"""The exact tiled kernel behind NTXentLoss and SupConLoss.

One ``torch.autograd.Function`` computes the SupCon family (L_out, L_in) for any
number of views, with or without labels: NT-Xent is the case V = 2 where every
sample is its own group. The (VN, VN) similarity matrix is never held in memory:
anchors are processed ``chunk`` rows at a time against all M = VN candidates,
and the backward recomputes each tile instead of storing it.

Notation (SEED.md): z_i are the L2-normalised rows, L_ij = z_i.z_j / tau the
logits, A(i) every candidate but i, P(i) the candidates of i's group, i excluded.
For anchor i::

    lse_i = log sum_{a in A(i)} exp(L_ia)
    L_out:  l_i = lse_i - 1/|P(i)| sum_{p in P(i)} L_ip
    L_in:   l_i = lse_i - log sum_{p in P(i)} exp(L_ip) + log |P(i)|

and the derivative of l_i with respect to L_ij is ``p_ij - w_ij`` where
``p_ij = exp(L_ij - lse_i)`` (softmax over A(i)) and ``w_ij`` is 1/|P(i)| on
positives for L_out, ``exp(L_ij - lse^P_i)`` on positives for L_in.

How the work is split:

* Softmax part, per tile of anchors ``[i0, i1)``: one matmul for the logits
  ``(c, D) @ (D, M)``, an in-place ``exp_`` and, in the backward, the row side
  ``P @ Z`` and the column side ``P^T @ Z_chunk`` (the similarity is symmetric, so
  z_j receives gradient both as an anchor and as a candidate). Three
  (c x M x D) matmuls per tile are the arithmetic floor.
* Positive part of L_out: linear in the logits, so it never needs the tile.
  ``sum_{p in P(i)} z_p = S_g(i) - z_i`` with ``S_g`` the sum of the rows of group
  g; forward and backward use these group sums, O(M D) work and memory.
* Positive part of L_in: a label comparison inside the tile (``g_i == g_j`` on a
  (c, M) boolean tile, never (M, M)).

Stability: the rows are unit vectors, so L_ij <= 1/tau and the forward computes
``exp(L_ij - 1/tau)``, which cannot overflow. A row whose sum underflows (its
nearest candidate has cosine below about 1 - 46 tau, only possible for
tau < ~0.045) is recomputed with an exact per-row ``logsumexp``. The backward
reuses the forward's per-row log-sum-exp, so ``exp(L_ij - lse_i) <= 1``.

Distributed use: the anchors are a contiguous block of rows
``[anchor_start, anchor_start + anchor_count)`` of the candidates, so a rank can
hold all gathered candidates and compute only its own anchors.

Memory: one or two (chunk, M) tiles plus O(M D) for the gradient and group
sums.
"""
from __future__ import annotations

import math

import torch

__all__ = ["supcon_tiled", "default_chunk_size"]

# A row whose shifted sum sum_a exp(L_ia - 1/tau) falls below this is recomputed
# with an exact per-row max: below it, terms flushed to zero (< 1.2e-38 in
# float32) could change the sum by more than M * 1e-18 in relative terms.
_UNDERFLOW_THRESHOLD = 1e-20

# Target bytes for one (chunk, M) tile.
_CPU_TILE_BYTES = 16 * 2**20
_CUDA_TILE_BYTES = 256 * 2**20


def default_chunk_size(num_candidates: int, device: torch.device, element_size: int = 4) -> int:
    """Rows of anchors per tile: a tile of ~16 MiB on CPU, ~256 MiB on CUDA.

    Args:
        num_candidates: M, the number of candidate rows (columns of a tile).
        device: where the tiles live.
        element_size: bytes per element of the computation dtype.

    Returns:
        A chunk size of at least 16 rows (at least 1 when M is tiny).
    """
    budget = _CUDA_TILE_BYTES if device.type == "cuda" else _CPU_TILE_BYTES
    rows = budget // max(1, num_candidates * element_size)
    return int(max(16, rows))


def _exp_floor(dtype: torch.dtype) -> float:
    """Shifted logits below this give subnormal exps; they are clamped (negligible, avoids slow subnormals)."""
    return math.log(torch.finfo(dtype).tiny) + 8.0  # about -79 in float32, -700 in float64


class _SupConTiled(torch.autograd.Function):
    """Sum over valid anchors of l_i, times ``scale``; see the module docstring."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        z: torch.Tensor,
        groups: torch.Tensor,
        num_groups: int,
        temperature: float,
        variant: str,
        anchor_start: int,
        anchor_count: int,
        scale: float,
        chunk: int,
    ) -> torch.Tensor:
        M, D = z.shape
        a0, na = anchor_start, anchor_count
        inv_tau = 1.0 / temperature
        dtype = z.dtype
        floor = _exp_floor(dtype)
        # Clamping costs a pass; it only matters when the range of shifted logits reaches subnormals.
        needs_clamp = 2.0 * inv_tau + math.log(max(M, 2)) > -floor

        za = z[a0 : a0 + na]  # (na, D)
        zs = za * inv_tau  # (na, D): anchors pre-scaled, so a matmul gives logits
        g_anchor = groups[a0 : a0 + na]  # (na,)
        counts = torch.bincount(groups, minlength=num_groups)  # (G,)
        num_pos = counts[g_anchor] - 1  # (na,) |P(i)|

        valid = num_pos > 0  # (na,) anchors without positive are left out
        lse = torch.empty(na, dtype=dtype, device=z.device)
        lse_pos = torch.empty(na, dtype=dtype, device=z.device) if variant == "in" else None
        rows_max = min(chunk, na)
        tile = torch.empty(rows_max, M, dtype=dtype, device=z.device)
        tile2 = torch.empty(rows_max, M, dtype=dtype, device=z.device) if variant == "in" else None
        zt = z.t()  # (D, M)
        for i0 in range(0, na, chunk):
            i1 = min(i0 + chunk, na)
            t = tile[: i1 - i0]
            torch.mm(zs[i0:i1], zt, out=t)  # (c, M) logits
            t.sub_(inv_tau)
            if needs_clamp:
                t.clamp_min_(floor)
            t.exp_()
            t.diagonal(a0 + i0).zero_()  # self is not in A(i)
            total = t.sum(dim=1)  # (c,)
            lse[i0:i1] = total.log().add_(inv_tau)
            low = total < _UNDERFLOW_THRESHOLD
            if variant == "in":
                positive = torch.eq(g_anchor[i0:i1, None], groups[None, :])  # (c, M) bool
                pos_total = torch.mul(t, positive, out=tile2[: i1 - i0]).sum(dim=1)  # (c,)
                lse_pos[i0:i1] = pos_total.log().add_(inv_tau)
                low |= (pos_total < _UNDERFLOW_THRESHOLD) & valid[i0:i1]
            if bool(low.any()):
                _exact_rows(z, zs, groups, g_anchor, a0, i0, low.nonzero().flatten(), lse, lse_pos)

        if lse_pos is not None:
            lse_pos = torch.where(valid, lse_pos, lse)  # finite placeholder; their weight is 0
        npos_safe = num_pos.clamp_min(1).to(dtype)
        if variant == "out":
            group_sum = torch.zeros(num_groups, D, dtype=dtype, device=z.device).index_add_(0, groups, z)  # (G, D)
            positive_sum = group_sum[g_anchor] - za  # (na, D): sum of z_p over P(i)
            pos_logit_mean = (zs * positive_sum).sum(dim=1) / npos_safe  # (na,)
            per_anchor = lse - pos_logit_mean
        else:
            group_sum = None
            per_anchor = lse - lse_pos + npos_safe.log()
        per_anchor = torch.where(valid, per_anchor, torch.zeros_like(per_anchor))
        loss = per_anchor.sum() * scale

        ctx.save_for_backward(z, groups, lse, lse_pos if lse_pos is not None else lse, num_pos)
        ctx.group_sum = group_sum
        ctx.cfg = (num_groups, inv_tau, variant, a0, na, scale, chunk, needs_clamp, floor)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        z, groups, lse, lse_pos, num_pos = ctx.saved_tensors
        num_groups, inv_tau, variant, a0, na, scale, chunk, needs_clamp, floor = ctx.cfg
        group_sum = ctx.group_sum
        M, D = z.shape
        dtype = z.dtype

        za = z[a0 : a0 + na]  # (na, D)
        zs = za * inv_tau  # (na, D)
        g_anchor = groups[a0 : a0 + na]  # (na,)
        valid = num_pos > 0  # (na,)
        mask_invalid = not bool(valid.all())
        valid_f = valid.to(dtype)
        # d loss / d (z_i . z_j) = factor * valid_i * (p_ij - w_ij), factor = grad * scale / tau.
        factor = grad_output.to(dtype) * (scale * inv_tau)
        # L_out: the softmax part is done in tiles and the positive part through group sums. As the
        # logits are symmetric, the gradient of candidate k from anchor i's row, p_ik z_i, is
        # exp(L_ki - lse_i) z_i: the same tile row k holds it, so for local rows one matmul
        # (P + P'^T) @ Z does both sides. Only candidates outside the anchor block (other ranks'
        # rows) need the column-side matmul P^T @ Z_anchor. L_in uses the general two-matmul path.
        symmetric = variant == "out"
        local = slice(a0, a0 + na)
        has_remote = na < M

        grad_z = torch.zeros_like(z)  # (M, D)
        grad_zt = None if symmetric else torch.zeros(D, M, dtype=dtype, device=z.device)  # (D, M) column side
        rows_max = min(chunk, na)
        tile = torch.empty(rows_max, M, dtype=dtype, device=z.device)
        tile2 = torch.empty(rows_max, na if symmetric else M, dtype=dtype, device=z.device)
        zt = z.t()  # (D, M)
        for i0 in range(0, na, chunk):
            i1 = min(i0 + chunk, na)
            t = tile[: i1 - i0]
            t2 = tile2[: i1 - i0]
            torch.mm(zs[i0:i1], zt, out=t)  # (c, M) logits
            if symmetric:
                torch.sub(t[:, local], lse[None, :], out=t2)  # (c, na) L_ki - lse_i, i over anchors
                if needs_clamp:
                    t2.clamp_min_(floor)
                t2.diagonal(i0).fill_(-math.inf)
                t2.exp_()  # (c, na) p_ik, the transposed softmax
                if mask_invalid:
                    t2.mul_(valid_f[None, :])
            else:
                torch.sub(t, lse_pos[i0:i1, None], out=t2)
                if needs_clamp:
                    t2.clamp_min_(floor)
                # Mask before exp: off the positives L_ij - lse^P_i may be large enough to overflow.
                t2.masked_fill_(torch.ne(g_anchor[i0:i1, None], groups[None, :]), -math.inf)
                t2.diagonal(a0 + i0).fill_(-math.inf)
                t2.exp_()  # (c, M) w_ij, zero off the positives
            t.sub_(lse[i0:i1, None])
            if needs_clamp:
                t.clamp_min_(floor)
            t.diagonal(a0 + i0).fill_(-math.inf)  # self is not in A(i)
            t.exp_()  # (c, M) softmax p_ij <= 1
            if not symmetric:
                t.sub_(t2)  # (c, M) p_ij - w_ij
            if mask_invalid:
                t.mul_(valid_f[i0:i1, None])
            if symmetric:
                if has_remote:  # column side for candidates of other ranks: P^T @ Z_anchor
                    if a0 > 0:
                        grad_z[:a0].addmm_(t[:, :a0].t(), za[i0:i1])  # (a0, D)
                    if a0 + na < M:
                        grad_z[a0 + na :].addmm_(t[:, a0 + na :].t(), za[i0:i1])  # (M - a0 - na, D)
                t[:, local].add_(t2)
                grad_z[a0 + i0 : a0 + i1].addmm_(t, z)  # (c, D) both sides of the local rows
            else:
                grad_z[a0 + i0 : a0 + i1].addmm_(t, z)  # (c, D) row side
                grad_zt.addmm_(za[i0:i1].t(), t)  # (D, M) column side
        if grad_zt is not None:
            grad_z.add_(grad_zt.t())
        grad_z.mul_(factor)

        if variant == "out":
            # w_ij = 1/|P(i)| on positives, through the group sums.
            coef = factor * valid_f / num_pos.clamp_min(1).to(dtype)  # (na,)
            cz = za * coef[:, None]  # (na, D)
            grad_z[local] -= group_sum[g_anchor] * coef[:, None] - cz  # row side
            anchor_sum = torch.zeros(num_groups, D, dtype=dtype, device=z.device).index_add_(0, g_anchor, cz)  # (G, D)
            grad_z -= anchor_sum[groups]  # column side, includes j = i ...
            grad_z[local] += cz  # ... which is not a positive of itself
        return grad_z, None, None, None, None, None, None, None, None


def _exact_rows(
    z: torch.Tensor,
    zs: torch.Tensor,
    groups: torch.Tensor,
    g_anchor: torch.Tensor,
    a0: int,
    i0: int,
    rows: torch.Tensor,
    lse: torch.Tensor,
    lse_pos: torch.Tensor | None,
) -> None:
    """Recompute lse (and lse_pos) of a few underflowing rows with a per-row max."""
    idx = rows + i0  # anchor indices
    logits = zs[idx] @ z.t()  # (k, M)
    logits[torch.arange(idx.numel(), device=z.device), idx + a0] = -math.inf
    lse[idx] = torch.logsumexp(logits, dim=1)
    if lse_pos is not None:
        positive = g_anchor[idx, None] == groups[None, :]  # (k, M)
        lse_pos[idx] = torch.logsumexp(logits.masked_fill(~positive, -math.inf), dim=1)


def supcon_tiled(
    z: torch.Tensor,
    groups: torch.Tensor,
    *,
    temperature: float,
    variant: str = "out",
    num_groups: int | None = None,
    anchor_start: int = 0,
    anchor_count: int | None = None,
    scale: float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """SupCon loss of anchors ``[anchor_start, anchor_start + anchor_count)`` against all rows.

    Internal entry point of the losses: inputs are assumed validated.

    Args:
        z: L2-normalised candidate rows, float32 or float64.
        groups: group id of each row, in ``[0, num_groups)``; rows of one group
            are each other's positives (labels, or the sample id for NT-Xent).
        temperature: tau > 0.
        variant: ``"out"`` (L_out) or ``"in"`` (L_in).
        num_groups: G, ``groups.max() + 1`` when None.
        anchor_start: first anchor row.
        anchor_count: number of anchor rows; all rows from ``anchor_start`` when None.
        scale: the sum of l_i over anchors with a positive is multiplied by this;
            1 / (number of such anchors) when None (the mean).
        chunk_size: anchor rows per tile; :func:`default_chunk_size` when None.

    Returns:
        A scalar tensor of z's dtype. Anchors without any positive contribute 0.

    Shape:
        z (M, D), groups (M,) int64 -> ().
    """
    M = z.shape[0]
    if anchor_count is None:
        anchor_count = M - anchor_start
    if num_groups is None:
        num_groups = int(groups.max().item()) + 1
    if scale is None:
        g_anchor = groups[anchor_start : anchor_start + anchor_count]
        counts = torch.bincount(groups, minlength=num_groups)
        scale = 1.0 / max(1, int((counts[g_anchor] > 1).sum().item()))
    chunk = chunk_size if chunk_size is not None else default_chunk_size(M, z.device, z.element_size())
    assert z.dim() == 2 and groups.shape == (M,) and 0 <= anchor_start and anchor_start + anchor_count <= M
    assert anchor_count >= 1 and chunk >= 1 and variant in ("out", "in")
    return _SupConTiled.apply(
        z, groups, num_groups, float(temperature), variant, anchor_start, anchor_count, float(scale), int(chunk)
    )
