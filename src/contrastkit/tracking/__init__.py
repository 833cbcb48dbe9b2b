"""Experiment tracking: MLflow and Weights & Biases runs beside a run's local logs (``--tracking``).

The interface is :class:`~.base.Tracker` (start / resume a run, log params, metrics with their global step and
artifacts, finish), one module per service (:mod:`.mlflow_tracker`, :mod:`.wandb_tracker`), :class:`NullTracker`
for none, :class:`~.base.FanOut` over several, and :class:`~.base.Guarded`, which turns a tracker's failure into
one warning so that training never stops for it. :mod:`.session` ties them to pretraining (one tracked run across
resumes, through references kept in the checkpoint) and to ``contrastkit eval``. The services' packages are
optional extras (``contrastkit[mlflow]``, ``contrastkit[wandb]``), imported only when a tracker is built.
"""
from .base import FanOut, Guarded, NullTracker, Tracker, TrackingUnavailable, TrackingWarning
from .session import BACKENDS, TrainingTracker, flat_params, log_evaluation, row_metrics, start_tracking

__all__ = ["Tracker", "NullTracker", "FanOut", "Guarded", "TrackingWarning", "TrackingUnavailable", "BACKENDS",
           "TrainingTracker", "start_tracking", "log_evaluation", "flat_params", "row_metrics"]
