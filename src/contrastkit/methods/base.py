"""What a training method is: the pieces it gives the training loop.

A method is one module of :mod:`contrastkit.methods` that defines a :class:`Method`. The loop never asks which
method it runs: it trains ``parts.model`` on ``parts.objective(outputs, labels)`` with ``parts.labels``, and a
method that writes more at the end (distillation's student) does so in ``finish``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["Method", "MethodParts", "DataInfo", "no_checks"]


@dataclass(frozen=True)
class DataInfo:
    """What a method needs to know of its training data.

    Attributes:
        targets: the class index of every training image (-1: unlabelled).
        classes: the class names.
        image_size: the side of the training crops.
        data: the data set or folder (as resolved).
        paths: the file of every training image, for data read from files (empty otherwise).
    """

    targets: list[int]
    classes: list[str]
    image_size: int
    data: str
    paths: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class MethodParts:
    """What the loop trains: the model (``forward(x) -> (h, outputs)``), the objective
    (``objective(outputs (N, V, D), labels (N,)) -> loss``) and the label of every training image (-1: none), or
    its label set (N, C), multi-hot."""

    model: nn.Module
    objective: nn.Module
    labels: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)  # what the method keeps for its ``finish``


def no_checks(cfg: Any) -> None:
    """A method without options of its own to check."""


@dataclass(frozen=True)
class Method:
    """A training method: its name and the functions that supply its pieces.

    Attributes:
        name: the ``--method`` name.
        summary: one line for ``--help`` and the docs.
        build: ``build(cfg, data: DataInfo) -> MethodParts``; called once per run, after the data are loaded.
        check: ``check(cfg)`` raises ValueError for an option value this method cannot train with.
        defaults: options whose unset value (None) means the method's own (``temperature``).
        options: options that belong to this method (and to any other that lists them): a method that does not
            list an option refuses it when set.
        ignored: options this method does not use (``contrastkit distill`` hides them from its ``--help``).
        views: views per image when the method fixes it (the CE baseline: 1); None for ``--n-views``.
        min_views: the fewest ``--n-views`` it trains with.
        min_batch: the smallest ``--batch-size`` (2 for a contrastive loss: each image is contrasted with others).
        needs_labels: it trains on class labels (refused on unlabelled data and on data of one class).
        finish: ``finish(cfg, parts, meta, summary) -> dict`` after training, on rank 0, with the checkpoint's
            ``meta`` (image size, normalisation, classes) and the run's summary: what it adds to the summary.
        writes: the files ``finish`` writes in the run folder (listed in its marker with the run's own).
    """

    name: str
    summary: str
    build: Callable[[Any, DataInfo], MethodParts]
    check: Callable[[Any], None] = no_checks
    defaults: dict[str, Any] = field(default_factory=dict)
    options: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    views: int | None = None
    min_views: int = 2
    min_batch: int = 2
    needs_labels: bool = False
    finish: Callable[[Any, MethodParts, dict, dict], dict] | None = None
    writes: tuple[str, ...] = ()

    def n_views(self, cfg: Any) -> int:
        """The views per image of a run of this method."""
        return self.views if self.views is not None else int(cfg.n_views)
