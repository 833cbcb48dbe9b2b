"""SimCLR (Chen et al. 2020): every image is its own class; its augmented views are the positives.

The loss is NT-Xent (Sec. 2.1) over 2N views, or over N x V views for V > 2 (SupCon's L_out with every label
distinct), or one of the comparison losses of Table 4 (NT-Logistic, margin triplet, N-pair) for two views.
"""
from __future__ import annotations

from typing import Any

from .. import losses
from ..models import build_model
from .base import DataInfo, Method, MethodParts
from .labels import unlabelled
from .objectives import PairObjective, ViewsObjective

__all__ = ["METHOD", "simclr_objective"]

# check_values=False: a non-finite output gives a non-finite loss for the loop's guard, with no device read-back.
# even_batches=True: the loop drops short batches, so every rank passes the same batch size and the gathers under
# torchrun need no size exchange (no device read either).
_FAST = dict(check_values=False, even_batches=True)


def simclr_objective(cfg: Any):
    """The objective of ``cfg.loss`` at ``cfg.temperature`` over ``cfg.n_views`` views."""
    if cfg.loss == "ntxent":
        if cfg.n_views == 2:
            return PairObjective(losses.NTXentLoss(temperature=cfg.temperature, normalize=cfg.l2_normalize, **_FAST))
        return ViewsObjective(losses.SupConLoss(temperature=cfg.temperature, normalize=cfg.l2_normalize, **_FAST),
                              use_labels=False)
    if cfg.loss == "ntlogistic":
        return PairObjective(losses.NTLogisticLoss(temperature=cfg.temperature, semi_hard=cfg.semi_hard,
                                                   check_values=False))
    if cfg.loss == "margin":
        return PairObjective(losses.MarginTripletLoss(margin=cfg.margin, semi_hard=cfg.semi_hard, check_values=False))
    if cfg.loss == "npair":
        return PairObjective(losses.NPairLoss(check_values=False))
    raise ValueError(f"unknown loss {cfg.loss!r}; known: ntxent, ntlogistic, margin, npair")


def _build(cfg: Any, data: DataInfo) -> MethodParts:
    return MethodParts(model=build_model(cfg, None, data.image_size), objective=simclr_objective(cfg),
                       labels=unlabelled(data))


def _check(cfg: Any) -> None:
    if not cfg.l2_normalize and cfg.loss != "ntxent":
        raise ValueError(f"--no-l2-normalize applies to NT-Xent and SupCon; got --method simclr --loss {cfg.loss}, "
                         f"which has no temperature-scaled dot product to leave unnormalised")
    if cfg.loss != "ntxent" and cfg.n_views != 2:
        raise ValueError(f"--loss {cfg.loss} compares two views; got --n-views {cfg.n_views}")


METHOD = Method(
    name="simclr",
    summary="SimCLR: NT-Xent over the views of each image (or a comparison loss of SimCLR Table 4)",
    build=_build,
    check=_check,
    defaults={"temperature": 0.5},  # SimCLR App. B.9, CIFAR-10
    ignored=("supcon_variant",),
)
