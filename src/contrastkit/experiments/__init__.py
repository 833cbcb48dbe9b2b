"""Experiments: one command per claim of the seed, with tables, figures and resume.

``contrastkit experiment NAME --budget smoke|cpu|gpu --out DIR`` runs
:func:`run_experiment`. The pieces:

* :mod:`.budgets`: how big the runs are (``smoke``, ``cpu``, ``gpu``).
* :mod:`.catalogue`: the eight experiments (grids, tables, verdicts).
* :mod:`.paper`: the published numbers compared against.
* :mod:`.execute`: planning, running, evaluating and resuming runs.
* :mod:`.report`: ``results.md`` and the PNG figure.
* :mod:`.subsets`: class-balanced data subsets for small budgets.
* :mod:`.augment_overrides`: pretraining with any augmentation op switched on or off.
"""
from .augment_overrides import pretrain_with_augment
from .budgets import BUDGETS, Budget, get_budget
from .catalogue import AUGMENT_OPS, EXPERIMENTS, get_experiment, list_experiments, ops_augment
from .execute import PlannedRun, describe_experiments, plan, run_experiment
from .spec import Experiment, RunSpec, Summary
from .subsets import materialise_subset

__all__ = [
    "AUGMENT_OPS",
    "BUDGETS",
    "Budget",
    "EXPERIMENTS",
    "Experiment",
    "PlannedRun",
    "RunSpec",
    "Summary",
    "describe_experiments",
    "get_budget",
    "get_experiment",
    "list_experiments",
    "materialise_subset",
    "ops_augment",
    "plan",
    "pretrain_with_augment",
    "run_experiment",
]
