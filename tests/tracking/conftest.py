"""One tracked run that was stopped after logging past its last checkpoint, resumed, and evaluated: the scenario
the MLflow and W&B tests read back (run once per session, with every tracking package that is installed)."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from conftest import TINY, make_image_folder
from contrastkit.cli import main

#: the packages the scenario tracks with, those installed
INSTALLED = [name for name in ("mlflow", "wandb") if importlib.util.find_spec(name) is not None]


def _pretrain(data: Path, run: Path, epochs: int, *extra: str) -> None:
    assert main(["pretrain", "--data", str(data), "--epochs", str(epochs), "--log-every", "1", "--out", str(run),
                 "--tracking", ",".join(INSTALLED), "--tracking-experiment", "scenario", *extra, *TINY]) == 0


@pytest.fixture(scope="session")
def tracked_scenario(tmp_path_factory) -> Path:
    """A folder holding ``run/`` (3 steps an epoch, logged every step) and the trackers' stores:

    1. epoch 1 (steps 1-3), its checkpoint kept aside;
    2. ``--resume --extend --epochs 2``: steps 4-6 logged and checkpointed;
    3. the kept checkpoint put back, as if the process of 2 had died after logging steps 4-6 and before its
       checkpoint; ``--resume --extend --epochs 2`` again: steps 4-6 trained again, and must not be logged twice;
    4. ``eval --protocol knn``, which adds its results to the tracked runs.
    """
    if not INSTALLED:
        pytest.skip("neither mlflow nor wandb is installed")
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow puts a new experiment's artifacts in ./mlruns
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_DIR", str(root))
        data, run = make_image_folder(root / "data"), root / "run"
        _pretrain(data, run, 1)
        shutil.copyfile(run / "last.pt", root / "after_epoch_1.pt")
        _pretrain(data, run, 2, "--resume", "--extend")
        shutil.copyfile(root / "after_epoch_1.pt", run / "last.pt")
        _pretrain(data, run, 2, "--resume", "--extend")
        assert main(["eval", "--checkpoint", str(run), "--protocol", "knn", "--num-workers", "0"]) == 0
    return root
