"""The tracker interface, the no-op tracker, the guard that keeps a tracking failure from stopping training, and
the fan-out over several trackers.

A tracker is one run in one experiment-tracking service (:mod:`.mlflow_tracker`, :mod:`.wandb_tracker`):
``start`` a new run or ``resume`` one by the reference it gave (stored in the checkpoint), then ``log_params``,
``log_metrics`` with the global step, ``log_artifact``, and ``finish``. :class:`Guarded` turns the first
exception of a tracker (a server down, a package missing) into one :class:`TrackingWarning` and makes every later
call a no-op, so training goes on with its local logs (``metrics.jsonl``, TensorBoard).
"""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any, Callable

__all__ = ["Tracker", "NullTracker", "Guarded", "FanOut", "TrackingWarning", "TrackingUnavailable", "STATUSES",
           "import_service"]

#: how a run ends: as finished, failed (an exception) or killed (Ctrl-C)
STATUSES = ("finished", "failed", "killed")


class TrackingWarning(UserWarning):
    """A tracker failed; the run goes on with its local logs."""


class TrackingUnavailable(RuntimeError):
    """A tracker cannot reach its service or run (said before anything is logged)."""


def import_service(package: str) -> Any:
    """The tracking service's package (``mlflow``, ``wandb``), imported when a tracker is made, so that a missing
    one fails the guarded start.

    Raises:
        ImportError: the package is not installed; the message names the extra of the same name.
    """
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(f"{package} is not installed: pip install 'contrastkit[{package}]'") from exc


class Tracker:
    """One run in a tracking service. The base class logs nothing (:class:`NullTracker`)."""

    name = "none"

    def start(self, run_name: str, experiment: str, tags: dict[str, str]) -> None:
        """Create a new run named ``run_name`` in ``experiment``."""

    def resume(self, reference: dict[str, Any], reopen: bool = True) -> None:
        """Continue the run of ``reference`` (what :meth:`reference` returned); ``reopen`` marks it running
        again (a resumed training run), else it keeps its status (an evaluation added to it).

        Raises:
            TrackingUnavailable: the run cannot be reached.
        """

    def reference(self) -> dict[str, Any]:
        """What finds this run again (run id, and where it lives): stored in the checkpoint."""
        return {}

    def logged_steps(self) -> dict[str, int] | None:
        """The last step the run holds of each metric (a resumed run), or None when the service cannot say."""
        return None

    def log_params(self, params: dict[str, str]) -> None:
        """The run's options; a resumed run records a changed value (``--extend``'s epochs) without failing."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Numbers at the global ``step``."""

    def log_artifact(self, path: Path, folder: str = "") -> None:
        """Copy the file ``path`` into the run (under ``folder``)."""

    def finish(self, status: str = "finished") -> None:
        """End the run with ``status`` (one of :data:`STATUSES`)."""


class NullTracker(Tracker):
    """Tracks nothing (``--tracking none``, and ranks other than 0)."""


class Guarded:
    """A tracker whose first failure warns once and switches it off; metrics of steps the run already holds (a
    resumed run) are dropped, so that no step is logged twice.

    Args:
        tracker: the tracker to guard.
        factory: builds the tracker instead (importing its package), so that a missing package is a failure
            like any other; used when ``tracker`` is None.
    """

    def __init__(self, tracker: Tracker | None = None, factory: Callable[[], Tracker] | None = None,
                 name: str = "") -> None:
        self.name = name or getattr(tracker, "name", "tracker")
        self.tracker: Tracker | None = tracker
        self.failed = False
        self.skip_through: dict[str, int] = {}
        if tracker is None and factory is not None:
            self.tracker = self.call(factory)

    @property
    def active(self) -> bool:
        return self.tracker is not None and not self.failed

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)``; its first exception warns (naming the tracker and the error) and switches it off."""
        if self.failed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # any failure of a tracking service or package must not stop training
            self.failed = True
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            warnings.warn(f"{self.name} tracking failed ({type(exc).__name__}: {first}); the run goes on with its "
                          f"local logs only (metrics.jsonl, TensorBoard)", TrackingWarning, stacklevel=3)
            return None

    def do(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the tracker's ``method`` under the guard (nothing when it is off)."""
        if not self.active:
            return None
        return self.call(getattr(self.tracker, method), *args, **kwargs)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        fresh = {k: v for k, v in metrics.items() if step > self.skip_through.get(k, -1)}
        if fresh:
            self.do("log_metrics", fresh, step)


class FanOut:
    """Every call goes to each guarded tracker in turn."""

    def __init__(self, trackers: list[Guarded]) -> None:
        self.trackers = trackers

    def __bool__(self) -> bool:
        return any(t.active for t in self.trackers)

    def log_params(self, params: dict[str, str]) -> None:
        for t in self.trackers:
            t.do("log_params", params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def log_artifact(self, path: Path, folder: str = "") -> None:
        for t in self.trackers:
            t.do("log_artifact", path, folder)

    def finish(self, status: str = "finished") -> None:
        for t in self.trackers:
            t.do("finish", status)
