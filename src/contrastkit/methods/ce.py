"""The cross-entropy baseline: the same encoder trained with a linear classifier on h and class labels
(SimCLR Table 8's supervised row, SupCon's baseline)."""
from __future__ import annotations

from typing import Any

from ..models import build_model
from .base import DataInfo, Method, MethodParts
from .labels import class_labels
from .objectives import CrossEntropyObjective

__all__ = ["METHOD"]


def _build(cfg: Any, data: DataInfo) -> MethodParts:
    return MethodParts(model=build_model(cfg, data.num_classes, data.image_size), objective=CrossEntropyObjective(),
                       labels=class_labels("ce", data))


def _check(cfg: Any) -> None:
    if not cfg.l2_normalize:
        raise ValueError("--no-l2-normalize applies to NT-Xent and SupCon; got --method ce, which has no "
                         "temperature-scaled dot product to leave unnormalised")


METHOD = Method(
    name="ce",
    summary="cross-entropy baseline: a linear classifier on h, one view per image",
    build=_build,
    check=_check,
    defaults={"temperature": 0.5},  # unused; recorded as before
    ignored=("loss", "supcon_variant", "temperature", "margin", "semi_hard", "n_views"),
    views=1,
    min_views=1,
    min_batch=1,
    needs_labels=True,
)
