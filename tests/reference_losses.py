"""Reference implementations of the contrastive losses, for tests and benchmarks.

Two kinds:

* ``*_loop``: deliberately slow, obviously correct loops over anchors, written
  straight from the formulas of SEED.md, in float64. Values only (no autograd
  expected, though they are differentiable).
* ``*_plain``: the usual vectorised autograd implementation holding the full
  (M, M) similarity matrix and masks (matmul + log_softmax / cross_entropy).
  The tiled kernel is compared with these in float32, values and gradients,
  and ``benchmarks/loss_bench.py`` times them as the "plain autograd" entry.

Conventions match ``contrastkit.losses``: inputs are not normalised (they are
here), views of a pair are (z1, z2) of shape (N, D), a multiviewed batch is
(N, V, D), labels None means each sample is its own class and -1 marks an
unlabelled sample, anchors without positive are left out of the mean.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _unit_rows64(x: torch.Tensor) -> torch.Tensor:
    """Rows divided by their norm, in float64 (a zero row stays zero)."""
    x = x.detach().to(torch.float64)
    peak = x.abs().amax(dim=-1, keepdim=True)
    x = torch.where(peak > 0, x / peak.clamp_min(1e-308), x)  # so the squares in the norm cannot overflow
    norm = x.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, x / norm.clamp_min(1e-300), torch.zeros_like(x))


def _views_and_groups(features: torch.Tensor, labels: torch.Tensor | None,
                      normalize: bool = True) -> tuple[torch.Tensor, list]:
    """Flatten (N, V, D) to a list of rows (unit rows unless ``normalize`` is False) with hashable group keys."""
    N, V, D = features.shape
    flat = features.reshape(N * V, D)
    rows = _unit_rows64(flat) if normalize else flat.detach().to(torch.float64)  # (N*V, D), row n*V + v
    keys = []
    for n in range(N):
        if labels is None or int(labels[n]) < 0:
            key = ("sample", n)
        else:
            key = ("label", int(labels[n]))
        keys.extend([key] * V)
    return rows, keys


# ----------------------------------------------------------------------------- slow loops (float64)


def supcon_loop(features: torch.Tensor, labels: torch.Tensor | None, temperature: float, variant: str = "out",
                normalize: bool = True) -> float:
    """SupCon L_out / L_in by loops over anchors, positives and candidates (raw dot products if not ``normalize``)."""
    rows, keys = _views_and_groups(features, labels, normalize)
    M = rows.shape[0]
    total, count = 0.0, 0
    for i in range(M):
        sims = [float(rows[i] @ rows[a]) / temperature for a in range(M)]
        others = [a for a in range(M) if a != i]
        positives = [p for p in others if keys[p] == keys[i]]
        if not positives:
            continue
        # Shift by the row max so exp never overflows, even for tiny temperatures.
        top = max(sims[a] for a in others)
        log_denominator = top + math.log(sum(math.exp(sims[a] - top) for a in others))
        if variant == "out":
            loss_i = -sum(sims[p] - log_denominator for p in positives) / len(positives)
        elif variant == "in":
            top_p = max(sims[p] for p in positives)
            log_pos = top_p + math.log(sum(math.exp(sims[p] - top_p) for p in positives) / len(positives))
            loss_i = -(log_pos - log_denominator)
        else:
            raise ValueError(variant)
        total += loss_i
        count += 1
    return total / count


def _pair_weight(i: int, j: int, views: int, batch_rows: int, labels, memory_labels) -> float:
    """How much candidate j is a positive of anchor row i: 1 for another view of i's sample; for another sample,
    1 / 0 for equal / different class labels (-1: none), the Jaccard overlap of multi-hot label sets."""
    if j == i:
        return 0.0
    if j < batch_rows and j // views == i // views:
        return 1.0
    if labels is None:
        return 0.0
    mine = labels[i // views]
    if j < batch_rows:
        other = labels[j // views]
    elif memory_labels is None:
        return 0.0
    else:
        other = memory_labels[j - batch_rows]
    if labels.dim() == 2:  # multi-hot
        a = {c for c in range(mine.shape[0]) if float(mine[c]) == 1}
        b = {c for c in range(other.shape[0]) if float(other[c]) == 1}
        return len(a & b) / len(a | b) if (a | b) else 0.0
    return 1.0 if int(mine) >= 0 and int(mine) == int(other) else 0.0


def supcon_weighted_loop(features: torch.Tensor, labels: torch.Tensor | None, temperature: float,
                         memory: torch.Tensor | None = None, memory_labels: torch.Tensor | None = None,
                         variant: str = "out", keys: torch.Tensor | None = None) -> torch.Tensor:
    """SupCon over the batch plus memory rows, with weighted positives, by loops over anchors and candidates in
    float64, written from the formulas: A(i) is every batch row but i and every memory row; w_ij as
    :func:`_pair_weight`; L_out: l_i = -(1 / sum_p w_ip) sum_p w_ip (L_ip - log sum_{a in A(i)} exp L_ia);
    L_in: l_i = -log( sum_p w_ip exp L_ip / sum_p w_ip ) + log sum_a exp L_ia; the mean over anchors with
    sum_p w_ip > 0. Differentiable w.r.t. ``features`` (float64), for gradient checks.

    With ``keys`` (momentum contrast), the anchors are ``features`` (the queries) and the batch's candidates are the
    keys instead: row i of the keys is anchor i's own key, left out of A(i) as the anchor itself is otherwise.

    Shape:
        features (N, V, D), labels (N,) / (N, C) / None, memory (K, D), memory_labels (K,) / (K, C),
        keys (N, V, D) -> ().
    """
    N, V, D = features.shape
    x = features.to(torch.float64).reshape(N * V, D)
    rows = x / x.norm(dim=1, keepdim=True)  # (N*V, D), row n*V + v, differentiable
    mem = _unit_rows64(memory) if memory is not None else rows.new_zeros(0, D)
    batch = rows if keys is None else _unit_rows64(keys.reshape(N * V, D))  # (N*V, D)
    candidates = torch.cat([batch, mem])  # (N*V + K, D)
    losses = []
    for i in range(N * V):
        others = [a for a in range(candidates.shape[0]) if a != i]
        logits = {a: (rows[i] @ candidates[a]) / temperature for a in others}
        log_denominator = torch.logsumexp(torch.stack([logits[a] for a in others]), dim=0)
        weights = {p: _pair_weight(i, p, V, N * V, labels, memory_labels) for p in others}
        positives = [p for p in others if weights[p] > 0]
        total = sum(weights[p] for p in positives)
        if not positives:
            continue
        if variant == "out":
            losses.append(-sum(weights[p] * (logits[p] - log_denominator) for p in positives) / total)
        else:
            log_mean = torch.logsumexp(torch.stack([logits[p] + math.log(weights[p]) for p in positives]), dim=0)
            losses.append(-(log_mean - math.log(total) - log_denominator))
    return torch.stack(losses).mean()


def ntxent_loop(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """NT-Xent: mean of l(i, j) over the 2N anchors, written from SimCLR eq. 1."""
    N = z1.shape[0]
    z = _unit_rows64(torch.cat([z1, z2]))  # (2N, D)
    total = 0.0
    for i in range(2 * N):
        j = (i + N) % (2 * N)
        sims = [float(z[i] @ z[k]) / temperature for k in range(2 * N)]
        top = max(sims[k] for k in range(2 * N) if k != i)
        denominator = sum(math.exp(sims[k] - top) for k in range(2 * N) if k != i)
        total += -(sims[j] - top - math.log(denominator))
    return total / (2 * N)


def _pair_sims_loop(z1: torch.Tensor, z2: torch.Tensor):
    """For each of the 2N views: (positive similarity, list of negative similarities)."""
    N = z1.shape[0]
    z = _unit_rows64(torch.cat([z1, z2]))  # (2N, D)
    out = []
    for i in range(2 * N):
        j = (i + N) % (2 * N)
        out.append((float(z[i] @ z[j]), [float(z[i] @ z[k]) for k in range(2 * N) if k not in (i, j)]))
    return out


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _semi_hard_loop(pos: float, negs: list, margin: float) -> list:
    """FaceNet semi-hard choice: pos - margin < n < pos, else the easiest hard negative, else none."""
    chosen = [n for n in negs if pos - margin < n < pos]
    if not chosen:
        hard = [n for n in negs if n >= pos]
        chosen = [min(hard)] if hard else []
    return chosen


def ntlogistic_loop(z1: torch.Tensor, z2: torch.Tensor, temperature: float, semi_hard: bool = False) -> float:
    """NT-Logistic: mean over anchors of the positive cost plus the mean cost of the (chosen) negatives."""
    per_anchor = []
    for pos, negs in _pair_sims_loop(z1, z2):
        if semi_hard:
            negs = _semi_hard_loop(pos, negs, math.inf)
        neg_costs = [-_log_sigmoid(-neg / temperature) for neg in negs]
        per_anchor.append(-_log_sigmoid(pos / temperature) + (sum(neg_costs) / len(neg_costs) if negs else 0.0))
    return sum(per_anchor) / len(per_anchor)


def triplet_loop(z1: torch.Tensor, z2: torch.Tensor, margin: float, semi_hard: bool = False) -> float:
    """Margin triplet: mean over anchors of the mean hinge over the chosen negatives."""
    per_anchor = []
    for pos, negs in _pair_sims_loop(z1, z2):
        chosen = _semi_hard_loop(pos, negs, margin) if semi_hard else negs
        costs = [max(n - pos + margin, 0.0) for n in chosen]
        per_anchor.append(sum(costs) / len(costs) if costs else 0.0)
    return sum(per_anchor) / len(per_anchor)


def npair_loop(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """N-pair (Sohn 2016): mean over anchors of log(1 + sum_k exp(s_k - s+))."""
    per_anchor = [math.log1p(sum(math.exp(n - pos) for n in negs)) for pos, negs in _pair_sims_loop(z1, z2)]
    return sum(per_anchor) / len(per_anchor)


# ----------------------------------------------------------------------------- plain autograd (full matrix)


def supcon_plain(
    features: torch.Tensor, labels: torch.Tensor | None, temperature: float, variant: str = "out"
) -> torch.Tensor:
    """SupCon with the whole (M, M) similarity matrix and masks, differentiable.

    Shape:
        features (N, V, D), labels (N,) or None -> ().
    """
    N, V, D = features.shape
    z = F.normalize(features.reshape(N * V, D), dim=1)  # (M, D)
    M = N * V
    logits = z @ z.t() / temperature  # (M, M)
    if labels is None:
        groups = torch.arange(N, device=z.device)
    else:
        groups = torch.where(labels >= 0, labels, -1 - torch.arange(N, device=z.device))  # -1: own group
    groups = groups.repeat_interleave(V)  # (M,)
    self_mask = torch.eye(M, dtype=torch.bool, device=z.device)  # (M, M)
    positive = (groups[:, None] == groups[None, :]) & ~self_mask  # (M, M)
    log_prob = torch.log_softmax(logits.masked_fill(self_mask, -math.inf), dim=1)  # (M, M)
    num_pos = positive.sum(dim=1)  # (M,)
    valid = num_pos > 0
    if variant == "out":
        per_anchor = -log_prob.masked_fill(~positive, 0).sum(dim=1) / num_pos.clamp_min(1)
    else:
        # Rows without positive are dropped below; give them a dummy finite mask so no NaN gradient leaks.
        lse_mask = torch.where(valid[:, None], positive, ~self_mask)  # (M, M)
        log_pos = torch.logsumexp(log_prob.masked_fill(~lse_mask, -math.inf), dim=1)  # (M,)
        per_anchor = -(log_pos - num_pos.clamp_min(1).to(log_prob.dtype).log())
    return per_anchor[valid].mean()


def ntxent_plain(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent as matmul + cross_entropy over the (2N, 2N) logits, self masked out.

    Shape:
        z1 (N, D), z2 (N, D) -> ().
    """
    N = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    logits = z @ z.t() / temperature  # (2N, 2N)
    logits = logits.masked_fill(torch.eye(2 * N, dtype=torch.bool, device=z.device), -math.inf)
    target = (torch.arange(2 * N, device=z.device) + N) % (2 * N)  # (2N,)
    return F.cross_entropy(logits, target)
