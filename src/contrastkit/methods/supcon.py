"""Supervised Contrastive Learning (Khosla et al. 2020): the views of every image of the same class are positives.

L_out (the default, SupCon Table 1) or L_in, over any number of views V >= 2; with ``--labeled-fraction`` < 1
only a class-balanced subset keeps its labels and the other images have their own views as positives.
"""
from __future__ import annotations

from typing import Any

from .. import losses
from ..models import build_model
from .base import DataInfo, Method, MethodParts
from .labels import class_labels
from .objectives import ViewsObjective

__all__ = ["METHOD"]


def _build(cfg: Any, data: DataInfo) -> MethodParts:
    # check_values=False and even_batches=True: as for SimCLR (methods/simclr.py), nothing is read back per step
    loss = losses.SupConLoss(temperature=cfg.temperature, variant=cfg.supcon_variant, normalize=cfg.l2_normalize,
                             check_values=False, even_batches=True)
    return MethodParts(model=build_model(cfg, None, data.image_size), objective=ViewsObjective(loss, use_labels=True),
                       labels=class_labels("supcon", data, cfg.labeled_fraction, cfg.seed))


METHOD = Method(
    name="supcon",
    summary="SupCon: every view of every image of the class is a positive (L_out or L_in)",
    build=_build,
    defaults={"temperature": 0.1},  # SupCon Sec. 4
    options=("labeled_fraction",),
    ignored=("loss", "margin", "semi_hard"),
    needs_labels=True,
)
