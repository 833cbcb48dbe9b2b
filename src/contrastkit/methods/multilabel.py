"""Multi-label SupCon: SupCon's L_out with label sets instead of classes (``--labels FILE.csv``).

Every image has a set of labels (``data/multilabel.py`` reads them from a CSV file beside a folder of images). Two
views of one image are positives of weight 1; two different images are positives weighted by the Jaccard overlap of
their label sets, |A n B| / |A u B| (0 when both are empty), and L_out becomes a weighted mean over positives
(:class:`~contrastkit.losses.SupConLoss` with (N, C) multi-hot labels). With one label per image it is SupCon.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import losses
from ..data import read_label_csv
from ..models import build_model
from .base import DataInfo, Method, MethodParts
from .objectives import ViewsObjective

__all__ = ["METHOD"]


def _build(cfg: Any, data: DataInfo) -> MethodParts:
    """The label sets of the training images from ``--labels`` (ValueError, naming the file, when they cannot be
    read), f and g, and SupCon L_out over multi-hot labels."""
    labels, names = read_label_csv(cfg.labels, data.data, data.paths)
    # check_values=False and even_batches=True: as for SimCLR (methods/simclr.py), nothing is read back per step
    loss = losses.SupConLoss(temperature=cfg.temperature, variant="out", normalize=cfg.l2_normalize,
                             check_values=False, even_batches=True)
    return MethodParts(model=build_model(cfg, None, data.image_size), objective=ViewsObjective(loss, use_labels=True),
                       labels=labels, extra={"label_names": names})


def _finish(cfg: Any, parts: MethodParts, meta: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The run's summary names the label set (the columns of the multi-hot labels) and how often each was seen."""
    counts = parts.labels.sum(dim=0).tolist()
    return {"label_names": parts.extra["label_names"],
            "label_counts": {n: int(c) for n, c in zip(parts.extra["label_names"], counts)}}


def _check(cfg: Any) -> None:
    if not cfg.labels:
        raise ValueError("--method supcon-multilabel needs --labels FILE.csv (columns path, relative to --data, and "
                         "labels, names separated by ';')")
    if not Path(cfg.labels).expanduser().is_file():
        raise ValueError(f"--labels {cfg.labels} does not exist")
    if cfg.supcon_variant != "out":
        raise ValueError(f"multi-label SupCon is a weighted L_out; got --supcon-variant {cfg.supcon_variant}")


METHOD = Method(
    name="supcon-multilabel",
    summary="multi-label SupCon: L_out with positives weighted by the overlap of label sets (--labels FILE.csv)",
    build=_build,
    check=_check,
    defaults={"temperature": 0.1},  # SupCon Sec. 4
    options=("labels",),
    ignored=("loss", "margin", "semi_hard", "supcon_variant"),
    finish=_finish,
)
