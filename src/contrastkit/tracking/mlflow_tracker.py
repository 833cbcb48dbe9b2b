"""MLflow: a run in an experiment of the tracking server or store that ``MLFLOW_TRACKING_URI`` names.

Unset, MLflow's own default applies (MLflow 3: a local SQLite file, ``mlflow.db`` in the working folder, with
artifacts in ``mlruns/`` beside it), so there is nothing to start; ``mlflow ui --backend-store-uri
sqlite:///mlflow.db`` in that folder shows the runs. The checkpoint keeps the run id and the URI, so a resume or an
evaluation reaches the same run from any folder.

The tracker talks to MLflow through ``MlflowClient`` (no active-run state in the process). A store it cannot reach
is refused up front: an HTTP server that does not answer its ``/health`` within 5 seconds, or a local store whose
file or folder is gone (a resume or evaluation never creates an empty one). MLflow's own retries of a request are
capped at 2 unless ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is set, so a server that goes down mid-run costs seconds,
not minutes, before the tracker is switched off.
"""
from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .base import Tracker, TrackingUnavailable, import_service

__all__ = ["MlflowTracker"]

_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
#: MLflow's limit of params per logging request
_BATCH = 100


def _local_store(uri: str) -> Path | None:
    """The file or folder of a local store URI (``sqlite:///...``, ``file:...``, a path), or None for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    if uri.startswith("file:"):
        return Path(uri[len("file:"):].removeprefix("//"))
    return None if "://" in uri else Path(uri)


def check_reachable(uri: str, existing: bool) -> None:
    """Raise :class:`TrackingUnavailable` for a server that does not answer or (``existing``) a local store that
    is not there."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
                return
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingUnavailable(f"the MLflow server {uri} does not answer ({exc})") from exc
    store = _local_store(uri)
    if existing and store is not None and not store.exists():
        raise TrackingUnavailable(f"the MLflow store {uri} does not exist (moved or deleted?)")


class MlflowTracker(Tracker):
    """One MLflow run. Importing ``mlflow`` happens here, so a missing package fails the guarded start.

    Raises:
        ImportError: mlflow is not installed (the message names the extra).
    """

    name = "mlflow"

    def __init__(self) -> None:
        self.mlflow = import_service("mlflow")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        self.client: Any = None
        self.uri = ""
        self.run_id = ""
        self.owns_status = True  # False for a run reached to add an evaluation: its status is left as it is

    def _connect(self, uri: str, existing: bool) -> None:
        check_reachable(uri, existing)
        self.uri = uri
        self.client = self.mlflow.MlflowClient(tracking_uri=uri)

    def start(self, run_name: str, experiment: str, tags: dict[str, str]) -> None:
        self._connect(self.mlflow.get_tracking_uri(), existing=False)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id

    def resume(self, reference: dict[str, Any], reopen: bool = True) -> None:
        self._connect(str(reference["tracking_uri"]), existing=True)
        run = self.client.get_run(str(reference["run_id"]))  # raises when the run is gone
        self.run_id = run.info.run_id
        self.owns_status = reopen
        if reopen:
            self.client.update_run(self.run_id, status="RUNNING")

    def reference(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.uri}

    def logged_steps(self) -> dict[str, int]:
        keys = self.client.get_run(self.run_id).data.metrics
        return {key: max(m.step for m in self.client.get_metric_history(self.run_id, key)) for key in keys}

    def log_params(self, params: dict[str, str]) -> None:
        """New keys as params; a key whose value changed since (a resume with other options) as the tag
        ``changed.<key>``, since MLflow params cannot change."""
        held = self.client.get_run(self.run_id).data.params
        Param = self.mlflow.entities.Param
        new = [Param(k, v) for k, v in params.items() if k not in held]
        for i in range(0, len(new), _BATCH):
            self.client.log_batch(self.run_id, params=new[i:i + _BATCH])
        for key, value in params.items():
            if key in held and held[key] != value:
                self.client.set_tag(self.run_id, f"changed.{key}", value)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        Metric = self.mlflow.entities.Metric
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, int(step)) for k, v in metrics.items()])

    def log_artifact(self, path: Path, folder: str = "") -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder or None)

    def finish(self, status: str = "finished") -> None:
        if self.owns_status:
            self.client.set_terminated(self.run_id, status=_STATUS[status])
