"""What an experiment is: a claim, a grid of runs, a table, a figure and a verdict.

An :class:`Experiment` turns a :class:`~contrastkit.experiments.budgets.Budget`
into :class:`RunSpec` s (one pretraining run each, differing from the budget's
base only in what the experiment varies), and turns the finished runs'
metrics into table rows, bars or a heatmap, and a plain-language verdict on
whether our numbers agree with the paper's claim.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .budgets import Budget

__all__ = ["RunSpec", "Experiment", "Summary"]


@dataclass(frozen=True)
class RunSpec:
    """One pretraining run of an experiment.

    Attributes:
        key: unique, file-system safe name of the run (its folder under ``OUT/runs``).
        labels: what the run varies, for tables and figures (``{"loss": "ntxent", "tau": 0.5}``).
        config: PretrainConfig fields that differ from the budget's base.
        augment: augmentation overrides (any :class:`~contrastkit.augment.AugmentConfig`
            argument: ``crop``, ``color``, ``blur``, ``rotate``, ``cutout``, ...).
        evaluate_z: also evaluate z = g(h) (the projection-head experiment).
    """

    key: str
    labels: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    evaluate_z: bool = False


@dataclass
class Summary:
    """What an experiment reports from its finished runs.

    Attributes:
        rows: table rows (ordered column -> value; accuracies in percent).
        verdict: a plain statement of whether our runs agree with the paper.
        figure: ``{"kind": "bars", "labels": [...], "ours": [...], "paper": [...] or None,
            "ylabel": ..., "paper_label": ...}`` or ``{"kind": "heatmap", "ops": [...],
            "matrix": [[...]], "title": ...}``.
    """

    rows: list[dict[str, Any]]
    verdict: str
    figure: dict[str, Any]


@dataclass(frozen=True)
class Experiment:
    """A claim of the seed and the runs that test it.

    Attributes:
        name: the command-line name (``losses``).
        claim: the claim, in one sentence.
        source: the paper's table or figure this mirrors.
        runs: ``runs(budget) -> list[RunSpec]``.
        summarise: ``summarise(results, paper) -> Summary`` where ``results`` are
            the finished runs' records (each with ``key``, ``labels`` and ``metrics``).
        paper: the published numbers that are compared against (see
            :mod:`~contrastkit.experiments.paper`), or None.
        stages: further work after the pretraining runs (fine-tuning, distillation),
            ``stages(experiment, budget, planned_runs, evaluator, out, progress) -> records``;
            ``summarise`` then judges these records instead of the runs'. None for most.
        metric_note: what the table's accuracies are, for ``results.md`` (default: linear and kNN on h).
    """

    name: str
    claim: str
    source: str
    runs: Callable[[Budget], list[RunSpec]]
    summarise: Callable[[list[dict[str, Any]], dict[str, Any] | None], Summary]
    paper: dict[str, Any] | None = None
    stages: Callable[..., list[dict[str, Any]]] | None = None
    metric_note: str | None = None
