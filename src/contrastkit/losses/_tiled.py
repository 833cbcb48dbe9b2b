"""The exact tiled kernel behind NTXentLoss and SupConLoss.

One ``torch.autograd.Function`` computes the SupCon family (L_out, L_in) for any number of views, with or without
labels; NT-Xent is V = 2 with every sample its own group. Anchors are processed ``chunk`` rows at a time against all
M = VN candidates, so the (M, M) similarity matrix is never held: memory is one (chunk, M) tile (two for L_in) plus
O(M D). With L_ij = z_i.z_j / tau, A(i) every candidate but i and P(i) the others of i's group (SEED.md)::

    lse_i = log sum_{a in A(i)} exp(L_ia)
    L_out:  l_i = lse_i - 1/|P(i)| sum_{p in P(i)} L_ip
    L_in:   l_i = lse_i - log sum_{p in P(i)} exp(L_ip) + log |P(i)|

and d l_i / d L_ij = p_ij - w_ij (softmax over A(i) minus the positives' weights). Each tile takes three
(c x M x D) matmuls: the logits, then, once its row sums give the softmax, the gradient's row side ``P @ Z`` and
column side ``P^T @ Z_tile``, accumulated into an (M, D) buffer during the forward; the backward only scales it.
L_out's positive part is linear in the logits and goes through per-group sums of z, never through the tile.

Stability: unit rows bound the logits by 1/tau, so a fixed shift ``exp(L_ij - 1/tau)`` cannot overflow. Rows whose
sum underflows are redone exactly with a per-row ``logsumexp``; for very small tau (2/tau + log M beyond the
exponent range) each row is shifted by its own max and shifted logits are clamped above the subnormals.
``sync_free`` avoids the underflow search (a device read) by always shifting by the row max.

The backward is once-differentiable. A rank may compute only its anchors ``[anchor_start, anchor_start +
anchor_count)`` against all gathered candidates (distributed use).
"""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from ._validation import computes_in_fp32

__all__ = ["supcon_tiled", "default_chunk_size", "group_counts"]

# A row whose shifted sum sum_a exp(L_ia - shift_i) falls below this is redone
# with an exact per-row logsumexp: below it, terms flushed to zero (< 1.2e-38 in
# float32) could change the sum by more than M * 1e-18 in relative terms.
_UNDERFLOW_THRESHOLD = 1e-20

# Target bytes for one (chunk, M) tile, and the fewest rows per tile: each tile streams the
# (M, D) candidates through three matmuls, so few rows would make them memory-bound.
_CPU_TILE_BYTES = 16 * 2**20
_CUDA_TILE_BYTES = 256 * 2**20
_MIN_ROWS = 128


def default_chunk_size(num_candidates: int, device: torch.device, element_size: int = 4) -> int:
    """Rows of anchors per tile: a tile of ~16 MiB on CPU, ~256 MiB on CUDA, and at least 128 rows.

    Args:
        num_candidates: M, the number of candidate rows (columns of a tile).
        device: where the tiles live.
        element_size: bytes per element of the computation dtype.

    Returns:
        The chunk size (the kernel caps it at the number of anchors).
    """
    budget = _CUDA_TILE_BYTES if device.type == "cuda" else _CPU_TILE_BYTES
    rows = budget // max(1, num_candidates * element_size)
    return int(max(_MIN_ROWS, rows))


def group_counts(groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Rows per group, as ``torch.bincount(groups, minlength=num_groups)`` but without reading ``groups.max()``
    back to the host (bincount does, to size its output: a synchronisation on GPUs).

    Shape:
        groups (M,) int64 in [0, G) -> (G,) int64.
    """
    return torch.zeros(num_groups, dtype=torch.long, device=groups.device).index_add_(
        0, groups, torch.ones_like(groups))


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
        scale: float | torch.Tensor,
        chunk: int,
        with_grad: bool,
        unit_norm: bool,
        sync_free: bool,
    ) -> torch.Tensor:
        M, D = z.shape
        a0, na = anchor_start, anchor_count
        local = slice(a0, a0 + na)
        inv_tau = 1.0 / temperature
        dtype, device = z.dtype, z.device
        floor = _exp_floor(dtype)
        row_max_shift, check_underflow, positive_shift = _shift_plan(M, inv_tau, floor, variant, unit_norm,
                                                                     sync_free)

        za = z[local]  # (na, D)
        g_anchor = groups[local]  # (na,)
        counts = group_counts(groups, num_groups)  # (G,)
        num_pos = counts[g_anchor] - 1  # (na,) |P(i)|
        valid = num_pos > 0  # (na,) anchors without positive are left out
        valid_f = valid.to(dtype)

        lse, lse_pos, grad_soft, tile, tile2 = _buffers(M, D, na, chunk, variant, with_grad, dtype, device)
        fixed_shift = 0.0 if row_max_shift else inv_tau
        z_aug, zs_aug = _augmented(z, za, inv_tau, fixed_shift)  # (M, D+1), (na, D+1)
        zs = zs_aug[:, :D]  # (na, D) z_i / tau
        fused = with_grad and variant == "out"
        for i0 in range(0, na, chunk):
            i1 = min(i0 + chunk, na)
            t, em = tile[: i1 - i0], tile2[: i1 - i0] if tile2 is not None else None
            torch.mm(zs_aug[i0:i1], z_aug.t(), out=t)  # (c, M) L_ij - 1/tau (L_ij if row_max_shift)
            shift, pshift = _exp_tile(t, em, a0 + i0, g_anchor[i0:i1], groups, floor, fixed_shift, row_max_shift,
                                      positive_shift)  # t: (c, M) e_ij = exp(L_ij - shift_i) <= 1
            if fused:
                row_aug = torch.mm(t, z_aug)  # (c, D+1): sum_j e_ij z_j, then sum_j e_ij
                total = row_aug[:, D]  # (c,)
            else:
                total = t.sum(dim=1)  # (c,)
            lse[i0:i1] = total.log().add_(shift)
            if variant == "in":
                if not positive_shift:
                    em = tile2[: i1 - i0]
                    torch.mul(t, torch.eq(g_anchor[i0:i1, None], groups[None, :]), out=em)  # (c, M) e_ij on positives
                pos_total = em.sum(dim=1)  # (c,) in units of exp(shift_i + pshift_i) with the positive shift
                lse_pos[i0:i1] = pos_total.log().add_(shift)
                if positive_shift:
                    lse_pos[i0:i1] += pshift
            keep = valid[i0:i1]  # (c,)
            if check_underflow:
                keep = _redo_underflowing(z, zs, groups, a0, i0, valid_f, lse, lse_pos, grad_soft, t,
                                          em if variant == "in" else None, total,
                                          pos_total if variant == "in" else None, keep)
            if with_grad:
                _add_gradient(grad_soft, t, em, z, za[i0:i1], a0 + i0, keep, total,
                              pos_total if variant == "in" else None, row_aug[:, :D] if fused else None)

        per_anchor, group_sum = _per_anchor_loss(z, zs, groups, num_groups, local, num_pos, lse, lse_pos, variant)
        loss = per_anchor.sum() * scale

        if with_grad:
            ctx.save_for_backward(z, groups, num_pos, grad_soft)
            ctx.group_sum = group_sum
            ctx.cfg = (num_groups, inv_tau, variant, a0, na, scale)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        z, groups, num_pos, grad_softmax = ctx.saved_tensors
        num_groups, inv_tau, variant, a0, na, scale = ctx.cfg
        dtype, D = z.dtype, z.shape[1]
        factor = grad_output.to(dtype) * (scale * inv_tau)  # d loss / d (z_i . z_j) = factor * (p_ij - w_ij)
        grad_z = grad_softmax * factor  # (M, D)
        if variant == "out":
            # -w_ij = -1/|P(i)| on positives, through the group sums.
            local = slice(a0, a0 + na)
            za = z[local]  # (na, D)
            g_anchor = groups[local]  # (na,)
            coef = factor * (num_pos > 0).to(dtype) / num_pos.clamp_min(1).to(dtype)  # (na,)
            cz = za * coef[:, None]  # (na, D)
            grad_z[local] -= ctx.group_sum[g_anchor] * coef[:, None] - cz  # row side
            anchor_sum = torch.zeros(num_groups, D, dtype=dtype, device=z.device).index_add_(0, g_anchor, cz)  # (G, D)
            grad_z -= anchor_sum[groups]  # column side, includes j = i ...
            grad_z[local] += cz  # ... which is not a positive of itself
        return grad_z, None, None, None, None, None, None, None, None, None, None, None


def _augmented(z: torch.Tensor, za: torch.Tensor, inv_tau: float, fixed_shift: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidates with a column of ones, ``(z_j, 1)``, and the anchors scaled by 1/tau with the shift,
    ``(z_i / tau, -shift)``: a matmul of the two gives the shifted logits, and the row-side matmul
    ``(e_i.) @ (Z, 1)`` gives the row sums for free in its last column.

    Shape:
        z (M, D), za (na, D) -> (M, D+1), (na, D+1).
    """
    (M, D), na, dtype, device = z.shape, za.shape[0], z.dtype, z.device
    z_aug = torch.empty(M, D + 1, dtype=dtype, device=device)  # (M, D+1)
    z_aug[:, :D] = z
    z_aug[:, D] = 1.0
    zs_aug = torch.empty(na, D + 1, dtype=dtype, device=device)  # (na, D+1)
    torch.mul(za, inv_tau, out=zs_aug[:, :D])
    zs_aug[:, D] = -fixed_shift
    return z_aug, zs_aug


def _buffers(M: int, D: int, na: int, chunk: int, variant: str, with_grad: bool, dtype: torch.dtype,
             device: torch.device) -> tuple:
    """The forward's outputs and work space: lse (na,), lse_pos (na,) for L_in, the gradient (M, D) when one is
    needed, and one (chunk, M) tile (two for L_in)."""
    lse = torch.empty(na, dtype=dtype, device=device)
    lse_pos = torch.empty(na, dtype=dtype, device=device) if variant == "in" else None
    # d(sum_i valid_i l_i)/dz in units of 1/tau, anchor (row) side and candidate (column) side.
    grad_soft = torch.zeros(M, D, dtype=dtype, device=device) if with_grad else None  # (M, D)
    rows_max = min(chunk, na)
    tile = torch.empty(rows_max, M, dtype=dtype, device=device)
    tile2 = torch.empty(rows_max, M, dtype=dtype, device=device) if variant == "in" else None
    return lse, lse_pos, grad_soft, tile, tile2


def _redo_underflowing(z: torch.Tensor, zs: torch.Tensor, groups: torch.Tensor, a0: int, i0: int,
                       valid_f: torch.Tensor, lse: torch.Tensor, lse_pos: torch.Tensor | None,
                       grad_soft: torch.Tensor | None, t: torch.Tensor, em: torch.Tensor | None,
                       total: torch.Tensor, pos_total: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor:
    """Redo the tile's rows whose sum (or, for L_in, positives' sum) underflowed with :func:`_exact_rows`;
    returns ``keep`` without them (their gradient is already in ``grad_soft``). Reads the device."""
    low = total < _UNDERFLOW_THRESHOLD
    if pos_total is not None:
        low |= (pos_total < _UNDERFLOW_THRESHOLD) & keep
    bad = low.nonzero().flatten()  # (k,) rows redone exactly
    if bad.numel() > 0:
        _exact_rows(z, zs, groups, a0, i0 + bad, valid_f, lse, lse_pos, grad_soft)
        if em is not None:
            t[bad] = 0
            em[bad] = 0
    return keep & ~low


def _shift_plan(M: int, inv_tau: float, floor: float, variant: str, unit_norm: bool, sync_free: bool
                ) -> tuple[bool, bool, bool]:
    """How a tile's logits are shifted before ``exp``: (row_max_shift, check_underflow, positive_shift)."""
    # Small tau: the logits span more than exp can represent, so shift each row by its own max
    # (two more passes per tile) and clamp the shifted logits above the subnormals. Otherwise
    # the fixed shift 1/tau is exact and free (folded into the matmul). Rows that are not unit vectors
    # have no such bound on their logits: always shift by the row max.
    row_max_shift = not unit_norm or 2.0 * inv_tau + math.log(max(M, 2)) > -floor
    # Can a row's shifted sum fall below _UNDERFLOW_THRESHOLD? Not under the row-max shift for L_out: the
    # row's largest term is exp(0) = 1. Not under the fixed shift when its smallest possible term,
    # exp(-2/tau) (unit rows: L_ij >= -1/tau), stays above it, i.e. tau >= 0.0435; for L_in the positives'
    # sum obeys the same bound. Only otherwise does each tile look for such rows, which reads the device
    # (a host synchronisation on GPUs).
    fixed_may_underflow = not row_max_shift and -2.0 * 1.001 * inv_tau < math.log(_UNDERFLOW_THRESHOLD)
    check_underflow = (variant == "in" and row_max_shift) or fixed_may_underflow
    # sync_free: no search. The row-max shift instead of the fixed one (the row's largest term is then 1), and
    # for L_in the positives' sum gets a shift of its own, their max (its largest term is 1 too): one more
    # pass over the tile's positives, no read.
    positive_shift = False
    if check_underflow and sync_free:
        row_max_shift, check_underflow, positive_shift = True, False, variant == "in"
    return row_max_shift, check_underflow, positive_shift


def _per_anchor_loss(z: torch.Tensor, zs: torch.Tensor, groups: torch.Tensor, num_groups: int, local: slice,
                     num_pos: torch.Tensor, lse: torch.Tensor, lse_pos: torch.Tensor | None, variant: str
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """l_i of every anchor (0 for an anchor without positive) from its log-sum-exps, and for L_out the group sums
    of the rows (the backward's positive part).

    Shape:
        z (M, D), zs (na, D) anchors / tau, lse and lse_pos (na,) -> (na,), (G, D).
    """
    D, dtype, device = z.shape[1], z.dtype, z.device
    za, g_anchor = z[local], groups[local]  # (na, D), (na,)
    valid = num_pos > 0  # (na,)
    if lse_pos is not None:
        lse_pos = torch.where(valid, lse_pos, lse)  # finite placeholder; these anchors are left out
    npos_safe = num_pos.clamp_min(1).to(dtype)
    group_sum = None
    if variant == "out":
        group_sum = torch.zeros(num_groups, D, dtype=dtype, device=device).index_add_(0, groups, z)  # (G, D)
        positive_sum = group_sum[g_anchor] - za  # (na, D): sum of z_p over P(i)
        pos_logit_mean = (zs * positive_sum).sum(dim=1) / npos_safe  # (na,)
        per_anchor = lse - pos_logit_mean
    else:
        per_anchor = lse - lse_pos + npos_safe.log()
    per_anchor = torch.where(valid, per_anchor, torch.zeros_like(per_anchor))
    return per_anchor, group_sum


def _exact_rows(
    z: torch.Tensor,
    zs: torch.Tensor,
    groups: torch.Tensor,
    a0: int,
    idx: torch.Tensor,
    valid_f: torch.Tensor,
    lse: torch.Tensor,
    lse_pos: torch.Tensor | None,
    grad_soft: torch.Tensor | None,
) -> None:
    """Redo the anchors ``idx`` (underflowing rows) with per-row log-sum-exp: lse, lse_pos and gradient."""
    k = idx.numel()
    logits = zs[idx] @ z.t()  # (k, M)
    logits[torch.arange(k, device=z.device), idx + a0] = -math.inf
    lse[idx] = torch.logsumexp(logits, dim=1)
    positive_logits = None
    if lse_pos is not None:
        positive = groups[a0 + idx, None] == groups[None, :]  # (k, M)
        positive_logits = logits.masked_fill(~positive, -math.inf)  # (k, M)
        lp = torch.logsumexp(positive_logits, dim=1)  # (k,) -inf for an anchor without positive
        lse_pos[idx] = torch.where(torch.isfinite(lp), lp, lse[idx])
    if grad_soft is None:
        return
    g = torch.exp(logits - lse[idx, None])  # (k, M) p_ij
    if positive_logits is not None:
        g -= torch.exp(positive_logits - lse_pos[idx, None])  # (k, M) - w_ij
    g *= valid_f[idx, None]
    grad_soft[a0 + idx] += g @ z  # (k, D) row side
    grad_soft.addmm_(g.t(), z[a0 + idx])  # (M, D) column side


@computes_in_fp32  # the matmuls would run in bf16/fp16 inside a caller's autocast
def supcon_tiled(
    z: torch.Tensor,
    groups: torch.Tensor,
    *,
    temperature: float,
    variant: str = "out",
    num_groups: int | None = None,
    anchor_start: int = 0,
    anchor_count: int | None = None,
    scale: float | torch.Tensor | None = None,
    chunk_size: int | None = None,
    unit_norm: bool = True,
    sync_free: bool = False,
) -> torch.Tensor:
    """SupCon loss of anchors ``[anchor_start, anchor_start + anchor_count)`` against all rows.

    Internal entry point of the losses: inputs are assumed validated.

    Args:
        z: candidate rows, float32 or float64; L2-normalised unless ``unit_norm`` is False.
        groups: group id of each row, in ``[0, num_groups)``; rows of one group
            are each other's positives (labels, or the sample id for NT-Xent).
        temperature: tau > 0.
        variant: ``"out"`` (L_out) or ``"in"`` (L_in).
        num_groups: G, ``groups.max() + 1`` when None.
        anchor_start: first anchor row.
        anchor_count: number of anchor rows; all rows from ``anchor_start`` when None.
        scale: the sum of l_i over anchors with a positive is multiplied by this (a float, or a 0-dim tensor of
            z's dtype computed on the device);
            1 / (number of such anchors) when None (the mean).
        chunk_size: anchor rows per tile; :func:`default_chunk_size` when None.
        unit_norm: the rows are unit vectors, so every logit is at most 1/tau and a fixed shift is exact;
            False shifts each row by its own max instead.
        sync_free: never read the device: where the underflow search would run (tau < 0.0435, or L_in under
            the row-max shift), shift each row by its own max instead (two more passes per tile), and for L_in
            the positives by their own max (three more), so that neither sum can underflow.

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
    with_grad = torch.is_grad_enabled() and z.requires_grad
    return _SupConTiled.apply(
        z, groups, num_groups, float(temperature), variant, anchor_start, anchor_count,
        scale if isinstance(scale, torch.Tensor) else float(scale), int(chunk),
        with_grad, bool(unit_norm), bool(sync_free),
    )


def _exp_tile(t: torch.Tensor, em: torch.Tensor | None, diag: int, g_rows: torch.Tensor, groups: torch.Tensor,
              floor: float, fixed_shift: float, row_max_shift: bool, positive_shift: bool):
    """Turn a tile of logits into e_ij = exp(L_ij - shift_i) in place, self excluded; with ``positive_shift`` also
    fill ``em`` with the positives' e'_ij = exp(L_ij - shift_i - pshift_i) before the clamp. Returns (shift,
    pshift).

    Shape:
        t, em: (c, M); g_rows: (c,) the tile's anchors' groups; groups: (M,); shift, pshift: (c,) or a float / None.
    """
    t.diagonal(diag).fill_(-math.inf)  # self is not in A(i)
    pshift = None
    if not row_max_shift:
        t.exp_()
        return fixed_shift, pshift
    shift = t.amax(dim=1)  # (c,)
    t.sub_(shift[:, None])
    if positive_shift:
        is_pos = torch.eq(g_rows[:, None], groups[None, :])  # (c, M)
        em.copy_(t).masked_fill_(~is_pos, -math.inf)  # (c, M), -inf off the positives and on the diagonal
        pshift = em.amax(dim=1)  # (c,) -inf for an anchor without positive
        pshift = torch.where(torch.isfinite(pshift), pshift, torch.zeros_like(pshift))
        em.sub_(pshift[:, None]).clamp_min_(floor).exp_().mul_(is_pos)
        em.diagonal(diag).zero_()
    t.clamp_min_(floor)
    t.diagonal(diag).fill_(-math.inf)
    t.exp_()
    return shift, pshift


def _add_gradient(grad_soft: torch.Tensor, t: torch.Tensor, em: torch.Tensor | None, z: torch.Tensor,
                  za_rows: torch.Tensor, row0: int, keep: torch.Tensor, total: torch.Tensor,
                  pos_total: torch.Tensor | None, row_sum: torch.Tensor | None) -> None:
    """Add one tile's share of d(loss)/dz to ``grad_soft``: p_ij = e_ij * a_i with a_i = keep_i / total_i (L_out),
    less w_ij = e_ij / pos_total_i on the positives (L_in, ``pos_total`` given; ``t`` is overwritten).

    Shape:
        grad_soft, z: (M, D); t, em: (c, M); za_rows: (c, D); keep, total, pos_total: (c,); row_sum: (c, D) the
        fused sum_j e_ij z_j, or None.
    """
    a = torch.where(keep, 1.0 / total, torch.zeros_like(total))  # (c,)
    if pos_total is not None:
        # w_ij = e_ij / pos_total_i on positives, so p_ij - w_ij = a_i (e_ij - e_ij * total_i / pos_total_i).
        ratio = torch.where(keep, total / pos_total, torch.zeros_like(total))  # (c,)
        t.sub_(em.mul_(ratio[:, None]))  # (c, M) (p_ij - w_ij) / a_i
        row = torch.mm(t, z)  # (c, D)
    else:
        row = row_sum if row_sum is not None else torch.mm(t, z)  # (c, D)
    grad_soft[row0 : row0 + t.shape[0]].addcmul_(row, a[:, None])  # row side
    grad_soft.addmm_(t.t(), za_rows * a[:, None])  # (M, D) column side: rows with a_i = 0 add nothing
