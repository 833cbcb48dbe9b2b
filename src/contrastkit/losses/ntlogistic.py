"""NT-Logistic: the logistic (sigmoid) alternative to NT-Xent compared in SimCLR."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._pairwise import semi_hard_negatives, view_similarities
from ._validation import check_flag, check_pair_with_negatives, check_temperature, computes_in_fp32

__all__ = ["NTLogisticLoss"]


class NTLogisticLoss(nn.Module):
    """Normalized temperature-scaled logistic loss (SimCLR, Table 2 and Table 4).

    With u an anchor view, v+ its other view and v- one of the 2(N-1) other
    views (all L2-normalised), each (anchor, negative) triplet costs::

        -log sigmoid(u.v+ / tau) - log sigmoid(-u.v- / tau)

    averaged over the anchor's negatives, then over the 2N anchors (so the
    positive and the negatives carry equal weight). Computed as softplus, so it
    is stable for any tau. Holds the (2N, 2N) similarity matrix.

    With ``semi_hard=True`` (SimCLR Table 4 "sh": 57.9 against 51.6) only the
    negatives farther from the anchor than its positive (``u.v- < u.v+``; the
    loss has no margin) are averaged, with the fallback of
    :class:`MarginTripletLoss` (the easiest hard negative) for an anchor without
    any; an anchor without any negative left keeps only its positive term.

    SimCLR tunes tau for each loss (Sec. 5.1) and reports NT-Logistic below
    NT-Xent (51.6 against 63.9 top-1, Table 4). The default tau = 0.5 is SimCLR's
    CIFAR-10 setting (App. B.9).

    Args:
        temperature: tau > 0.
        semi_hard: use semi-hard negative mining.
        check_values: refuse NaN/inf inputs with a ValueError (default; reads a flag back from the device).
            False skips that check (a NaN/inf input then gives a NaN loss) and the call never synchronises
            with the host, as :class:`NTXentLoss` with ``check_values=False``.

    Raises:
        TypeError: temperature not a real number.
        ValueError: temperature not finite or <= 0.

    Shape:
        z1 (N, D), z2 (N, D) -> scalar.
    """

    def __init__(self, temperature: float = 0.5, semi_hard: bool = False, check_values: bool = True) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.semi_hard = bool(semi_hard)
        self.check_values = check_flag("check_values", check_values)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, semi_hard={self.semi_hard}" + (
            "" if self.check_values else ", check_values=False")

    @computes_in_fp32
    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Mean NT-Logistic loss over the 2N anchors.

        Inputs, dtypes and errors (N < 2 included) as :class:`NTXentLoss`.
        """
        z1, z2 = check_pair_with_negatives("NTLogisticLoss", z1, z2, self.check_values)
        positive, negatives = view_similarities(z1, z2)  # (2N,), (2N, 2N-2)
        pos_term = F.softplus(-positive / self.temperature)  # (2N,)
        neg_cost = F.softplus(negatives / self.temperature)  # (2N, 2N-2)
        if self.semi_hard:
            chosen = semi_hard_negatives(positive, negatives, math.inf)  # (2N, 2N-2)
            neg_term = (neg_cost * chosen).sum(dim=1) / chosen.sum(dim=1).clamp_min(1)  # (2N,)
        else:
            neg_term = neg_cost.mean(dim=1)  # (2N,)
        return (pos_term + neg_term).mean()
