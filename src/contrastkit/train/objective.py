"""The training objective of each method, on a batch of embeddings.

A uniform callable ``objective(outputs, labels) -> loss`` where ``outputs`` is
(N, V, D) for the contrastive methods and (N, V, C) logits for ``ce``. Gradient
caching (:mod:`contrastkit.gradcache`) calls the same objective on cached embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PretrainConfig

__all__ = ["Objective", "build_objective"]


class Objective(nn.Module):
    """Wraps a loss so that every method takes (outputs (N, V, D), labels (N,) or None)."""

    def __init__(self, method: str, loss: nn.Module | None, pairwise: bool) -> None:
        super().__init__()
        self.method = method
        self.loss = loss
        self.pairwise = pairwise  # the loss takes (z1, z2)

    @property
    def needs_labels(self) -> bool:
        return self.method in ("supcon", "ce")

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        # outputs: (N, V, D)
        # Non-finite embeddings are a non-finite step for the trainer's guard (stop with the step, or skip), not
        # the losses' ValueError: the loss sees zeros in their place and the result is NaN. Decided on the device,
        # without reading the flag back (no host synchronisation per step on GPUs).
        finite = torch.isfinite(outputs).all()  # () bool
        outputs = torch.where(finite, outputs, torch.zeros((), dtype=outputs.dtype, device=outputs.device))
        if self.method == "ce":
            n, v, c = outputs.shape
            loss = F.cross_entropy(outputs.reshape(n * v, c).float(), labels[:, None].expand(n, v).reshape(n * v))
        elif self.pairwise:
            loss = self.loss(outputs[:, 0], outputs[:, 1])
        else:
            loss = self.loss(outputs, labels if self.method == "supcon" else None)
        return torch.where(finite, loss, torch.full((), float("nan"), dtype=loss.dtype, device=loss.device))


def build_objective(cfg: PretrainConfig) -> nn.Module:
    """The loss of ``cfg.method`` (and ``cfg.loss`` for simclr) with the configured temperature."""
    from .. import losses

    if cfg.method == "ce":
        return Objective("ce", None, False)
    if cfg.method == "distill":  # student and teacher logits side by side (train/distill.py)
        from .distill import build_distill_objective

        return build_distill_objective(cfg)
    cfg = cfg.with_method_defaults()  # the method's temperature unless one is set
    # check_values=False: Objective.forward already turns non-finite embeddings into a NaN loss (no device read).
    # even_batches=True: the trainer's DistributedSampler and DataLoader drop the last short batch, so every rank
    # passes the same batch size and the gathers under torchrun need no size exchange (no device read either).
    fast = dict(normalize=cfg.l2_normalize, check_values=False, even_batches=True)
    if cfg.method == "supcon":
        return Objective("supcon", losses.SupConLoss(temperature=cfg.temperature, variant=cfg.supcon_variant,
                                                     **fast), False)
    if cfg.loss == "ntxent":
        if cfg.n_views == 2:
            return Objective("simclr", losses.NTXentLoss(temperature=cfg.temperature, **fast), True)
        return Objective("simclr", losses.SupConLoss(temperature=cfg.temperature, **fast), False)
    if cfg.loss == "ntlogistic":
        return Objective("simclr", losses.NTLogisticLoss(temperature=cfg.temperature, semi_hard=cfg.semi_hard,
                                                         check_values=False), True)
    if cfg.loss == "margin":
        return Objective("simclr", losses.MarginTripletLoss(margin=cfg.margin, semi_hard=cfg.semi_hard,
                                                            check_values=False), True)
    if cfg.loss == "npair":
        return Objective("simclr", losses.NPairLoss(check_values=False), True)
    raise ValueError(f"unknown loss {cfg.loss!r}")
