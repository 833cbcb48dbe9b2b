"""Tracking a pretraining run and its evaluations: the glue between the training loop and the trackers.

:func:`start_tracking` opens one run per backend of ``--tracking`` (or continues the runs whose references the
checkpoint holds, on ``--resume``), logs every resolved option as a param, and returns a
:class:`TrainingTracker`. The loop hands it each row it writes to ``metrics.jsonl`` (:meth:`~TrainingTracker.
log_row`: the loss, learning rate, images/s and kNN monitor with their global step), and at the end the summary,
``config.yaml`` and the loss and kNN plots as artifacts (:meth:`~TrainingTracker.finish`). On a resume, the
metrics of steps the tracked run already holds (logged by the stopped process after its last checkpoint) are not
logged again: MLflow says which it holds; for W&B they are the rows of ``metrics.jsonl`` after the checkpoint.
:func:`log_evaluation` adds ``contrastkit eval``'s results to the run of the checkpoint it evaluated.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from .base import FanOut, Guarded, Tracker
from .mlflow_tracker import MlflowTracker
from .wandb_tracker import WandbTracker

__all__ = ["TrainingTracker", "start_tracking", "log_evaluation", "flat_params", "row_metrics", "BACKENDS"]

#: ``--tracking`` name -> the tracker class (built, and its package imported, under the guard)
BACKENDS: dict[str, Callable[[], Tracker]] = {"mlflow": MlflowTracker, "wandb": WandbTracker}
#: the metrics.jsonl row kinds that hold metrics, and the prefix of their names (as in TensorBoard)
_PREFIX = {"step": "train", "epoch": "epoch"}


def flat_params(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Options as flat ``str -> str`` params: nested mappings as ``key.sub``, other values as JSON (strings as
    they are)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value if isinstance(value, str) else json.dumps(value)
    return out


def row_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of a ``metrics.jsonl`` row as named metrics (``train/loss``, ``epoch/knn_top1``); none for
    rows that are events (``extend``)."""
    prefix = _PREFIX.get(row.get("kind"))
    if prefix is None:
        return {}
    return {f"{prefix}/{k}": float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch")}


def _logged_after(metrics_file: Path, step: int) -> dict[str, int]:
    """The last step of each metric in the rows of ``metrics_file`` after ``step``: what the stopped process of
    a resumed run logged after its checkpoint."""
    last: dict[str, int] = {}
    if not metrics_file.is_file():
        return last
    for line in metrics_file.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("step", 0) > step:
            for key in row_metrics(row):
                last[key] = max(last.get(key, -1), int(row["step"]))
    return last


class TrainingTracker:
    """The trackers of one pretraining run (none when tracking is off or on ranks other than 0)."""

    def __init__(self, trackers: list[Guarded], references: dict[str, Any], out: Path) -> None:
        self.trackers = FanOut(trackers)
        self._guarded = trackers
        self._references = dict(references)
        self.out = out

    def references(self) -> dict[str, Any]:
        """What the checkpoint stores to find the runs again: ``{backend: reference}``, those of backends not
        used now kept as they were."""
        refs = dict(self._references)
        for t in self._guarded:
            if t.active:
                refs[t.name] = t.tracker.reference()
        return refs

    def log_row(self, row: dict[str, Any], step: int) -> None:
        """A ``metrics.jsonl`` row's numbers at the global ``step``."""
        metrics = row_metrics(row)
        if metrics and self.trackers:
            self.trackers.log_metrics(metrics, step)

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Log the summary, ``config.yaml`` and the loss and kNN plots as artifacts and end the runs; returns
        ``summary``."""
        if not self.trackers:
            return summary
        for name in ("summary.json", "config.yaml"):
            if (self.out / name).is_file():
                self.trackers.log_artifact(self.out / name)
        with tempfile.TemporaryDirectory() as tmp:
            for plot in _plots(self.out / "metrics.jsonl", Path(tmp)):
                self.trackers.log_artifact(plot, "plots")
        self.trackers.finish("finished")
        return summary

    def abort(self, exc: BaseException) -> None:
        """End the runs as killed (Ctrl-C) or failed (any other exception)."""
        self.trackers.finish("killed" if isinstance(exc, KeyboardInterrupt) else "failed")


def _plots(metrics_file: Path, folder: Path) -> list[Path]:
    """``loss_curve.png`` (the step rows' loss) and ``knn_per_epoch.png`` (the epoch rows' kNN monitor), for
    those that have points."""
    from ..evaluate.plots import plot_curves

    if not metrics_file.is_file():
        return []
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if r.get("kind") == "step" and "loss" in r]
    knn = [r for r in rows if r.get("kind") == "epoch" and "knn_top1" in r]
    plots = []
    if steps:
        plots.append(plot_curves(steps, ["loss"], folder / "loss_curve.png", x="step"))
    if knn:
        plots.append(plot_curves(knn, ["knn_top1"], folder / "knn_per_epoch.png", x="epoch"))
    return [Path(p) for p in plots]


def start_tracking(cfg: Any, out: Path, references: dict[str, Any], resumed_at: int | None,
                   enabled: bool = True) -> TrainingTracker:
    """Open (or, on a resume, continue) a run in each tracking backend of ``cfg.tracking``.

    Call it before :class:`~contrastkit.train.metrics.MetricsLog` trims ``metrics.jsonl`` on a resume: the rows
    after the checkpoint say which steps a W&B run already holds.

    Args:
        cfg: the run's validated :class:`~contrastkit.config.PretrainConfig`.
        out: the run folder.
        references: the checkpoint's ``tracking`` entry (``{backend: reference}``), empty for a new run.
        resumed_at: the global step of the checkpoint a resume starts from; None for a new run.
        enabled: False on ranks other than 0 (nothing is tracked there).

    Returns:
        A :class:`TrainingTracker`; a backend that fails to start has warned once and is off.
    """
    names = cfg.tracking_backends() if enabled else []
    trackers = []
    for name in names:
        guarded = Guarded(factory=BACKENDS[name], name=name)
        ref = references.get(name) if resumed_at is not None else None
        if ref:
            guarded.do("resume", ref)
            held = guarded.do("logged_steps")
            guarded.skip_through = held if held is not None else _logged_after(out / "metrics.jsonl", resumed_at)
        else:
            guarded.do("start", out.name, cfg.tracking_experiment,
                       {"contrastkit.out": str(out), "contrastkit.version": __version__})
        guarded.do("log_params", flat_params(cfg.to_dict()))
        trackers.append(guarded)
    return TrainingTracker(trackers, references, out)


def log_evaluation(references: dict[str, Any] | None, step: int, results: dict[str, tuple[dict, Path]]) -> None:
    """Add evaluation results to the tracked runs of the checkpoint evaluated, where they are reachable.

    Args:
        references: the checkpoint's ``tracking`` entry (None or empty: nothing to do).
        step: the checkpoint's global step, the step of the metrics.
        results: ``{tag: (result, file)}``: each protocol's result (its ``metrics``) and the JSON file written,
            logged as ``eval/<tag>/<metric>`` and as an artifact under ``eval/``.
    """
    if not references:
        return
    metrics = {f"eval/{tag}/{k}": float(v) for tag, (res, _) in results.items()
               for k, v in res.get("metrics", {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name, ref in references.items():
        if name not in BACKENDS or not ref:
            continue
        guarded = Guarded(factory=BACKENDS[name], name=f"{name} (adding the evaluation to run {ref.get('run_id')})")
        guarded.do("resume", ref, reopen=False)
        if metrics:
            guarded.do("log_metrics", metrics, step)
        for _, path in results.values():
            if path is not None:  # None: the results were printed only (a read-only checkpoint folder)
                guarded.do("log_artifact", path, "eval")
        guarded.do("finish", "finished")
