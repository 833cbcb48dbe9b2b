"""Weights & Biases: a run in a project, offline unless the user has logged in.

The mode is ``WANDB_MODE`` when set; else online when W&B has an API key (``WANDB_API_KEY``, or the ``~/.netrc``
entry ``wandb login`` writes), offline otherwise: the run is written under ``wandb/`` in the working folder (or
``WANDB_DIR``) and ``wandb sync`` uploads it later. Every metric is logged with the run's global step as the value
``global_step``, which W&B charts against (``define_metric``), so a resumed run and an evaluation added later fit
the same axis. Artifacts are copied into the run's files folder (under ``contrastkit/``, apart from W&B's own
``config.yaml``), which W&B uploads with the run.
"""
from __future__ import annotations

import netrc
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .base import Tracker, TrackingUnavailable, import_service

__all__ = ["WandbTracker", "wandb_mode"]

_EXIT_CODE = {"finished": 0, "failed": 1, "killed": 255}


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; ``online`` when W&B has an API key (environment or ``~/.netrc``), else
    ``offline``."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        found = netrc.netrc().authenticators(host)
    except (OSError, netrc.NetrcParseError):
        found = None
    return "online" if found else "offline"


class WandbTracker(Tracker):
    """One W&B run. Importing ``wandb`` happens here, so a missing package fails the guarded start.

    Raises:
        ImportError: wandb is not installed (the message names the extra).
    """

    name = "wandb"

    def __init__(self) -> None:
        self.wandb = import_service("wandb")
        self.run: Any = None

    def _init(self, **kwargs: Any) -> None:
        settings = self.wandb.Settings(console="off", silent=True, x_disable_stats=True)
        self.run = self.wandb.init(mode=wandb_mode(), settings=settings, reinit="create_new", **kwargs)
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")

    def start(self, run_name: str, experiment: str, tags: dict[str, str]) -> None:
        self._init(project=experiment, name=run_name, notes=tags.get("contrastkit.out"),
                   dir=os.environ.get("WANDB_DIR"))

    def resume(self, reference: dict[str, Any], reopen: bool = True) -> None:
        folder = reference.get("dir")
        if folder and not Path(folder).is_dir():
            raise TrackingUnavailable(f"the W&B folder {folder} of run {reference.get('run_id')} is gone")
        if wandb_mode() == "offline":
            _wait_for_a_new_second(Path(folder or os.environ.get("WANDB_DIR") or "."), reference["run_id"])
        self._init(project=reference.get("project"), entity=reference.get("entity"), id=reference["run_id"],
                   resume="allow", dir=folder)

    def reference(self) -> dict[str, Any]:
        folder = Path(self.run.dir).parents[2] if self.run.dir else None  # DIR/wandb/<run>/files
        return {"run_id": self.run.id, "project": self.run.project, "entity": self.run.entity or None,
                "dir": str(folder) if folder else None}

    def log_params(self, params: dict[str, str]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({**{k: float(v) for k, v in metrics.items()}, "global_step": int(step)})

    def log_artifact(self, path: Path, folder: str = "") -> None:
        target = Path(self.run.dir) / "contrastkit" / folder / Path(path).name  # W&B keeps its own config.yaml
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        self.run.save(str(target), base_path=self.run.dir, policy="end")

    def finish(self, status: str = "finished") -> None:
        self.run.finish(exit_code=_EXIT_CODE[status])


def _wait_for_a_new_second(root: Path, run_id: str) -> None:
    """W&B names an offline run's folder ``offline-run-<start second>-<id>``: a resume (or an evaluation) started in
    the same second as the run's previous process would write into that folder and replace its records, which
    ``wandb sync`` then never uploads. Wait for a second whose folder does not exist yet."""
    for _ in range(3):
        stamp = datetime.fromtimestamp(time.time()).strftime("%Y%m%d_%H%M%S")
        if not (root / "wandb" / f"offline-run-{stamp}-{run_id}").exists():
            return
        time.sleep(1.01 - time.time() % 1)
