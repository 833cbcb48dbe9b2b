"""Positive and negative cosine similarities of a two-view batch, for the non-tiled losses."""
from __future__ import annotations

import torch

from ._validation import normalize

__all__ = ["view_similarities", "semi_hard_negatives"]


def view_similarities(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of each of the 2N views to its positive and to its 2(N-1) negatives.

    View i < N is z1[i], view N + i is z2[i]; the positive of view i is the
    other view of the same sample, the negatives are every other view. Holds the
    (2N, 2N) similarity matrix: meant for the comparison losses, not for huge N.

    Args:
        z1: first views (validated, not normalised).
        z2: second views.

    Returns:
        ``(positive, negatives)`` in float32 (float64 for float64 input).

    Shape:
        z1 (N, D), z2 (N, D) -> positive (2N,), negatives (2N, 2N - 2).
    """
    N = z1.shape[0]
    z = normalize(torch.cat([z1, z2], dim=0))  # (2N, D)
    sim = z @ z.t()  # (2N, 2N)
    idx = torch.arange(2 * N, device=z.device)
    partner = (idx + N) % (2 * N)  # (2N,)
    positive = sim.gather(1, partner[:, None]).squeeze(1)  # (2N,)
    # Column c of row i's negatives is the c-th column left when i and its partner are taken out: a gather
    # with computed indices (a boolean mask would read its count back from the device).
    first, second = torch.minimum(idx, partner)[:, None], torch.maximum(idx, partner)[:, None]  # (2N, 1)
    cols = torch.arange(2 * N - 2, device=z.device)[None, :]  # (1, 2N-2)
    cols = cols + (cols >= first).long()
    cols = cols + (cols >= second).long()  # (2N, 2N-2)
    negatives = sim.gather(1, cols)  # (2N, 2N - 2)
    return positive, negatives


@torch.no_grad()
def semi_hard_negatives(positive: torch.Tensor, negatives: torch.Tensor, margin: float) -> torch.Tensor:
    """Semi-hard negative mining (FaceNet, Schroff et al. 2015, Sec. 3.2), on similarities.

    The semi-hard negatives of an anchor are farther from it than its positive
    but within the margin: ``s+ - margin < s- < s+`` (``margin = inf`` keeps every
    negative farther than the positive). An anchor with none falls back, as
    FaceNet's reference implementation does, to the easiest of its hard
    negatives (the smallest ``s- >= s+``); an anchor with no hard negative
    either keeps none (all its negatives are beyond the margin).

    Args:
        positive: similarity of each anchor to its positive.
        negatives: similarities of each anchor to its negatives.
        margin: the margin m >= 0, or ``math.inf``.

    Returns:
        A boolean mask of the chosen negatives.

    Shape:
        positive (A,), negatives (A, K) -> (A, K).
    """
    pos = positive[:, None]  # (A, 1)
    chosen = (negatives < pos) & (negatives > pos - margin)  # (A, K)
    hard = negatives >= pos  # (A, K)
    fallback = ~chosen.any(dim=1) & hard.any(dim=1)  # (A,)
    easiest_hard = negatives.masked_fill(~hard, float("inf")).argmin(dim=1, keepdim=True)  # (A, 1)
    fallback_pick = torch.zeros_like(chosen).scatter_(1, easiest_hard, fallback[:, None])  # (A, K), no read-back
    return chosen | fallback_pick
