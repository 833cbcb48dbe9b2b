"""Against a real W&B run in offline mode (read back from its files): the same run continued across the resumes
and the evaluation, every step once, the options as config, and the artifacts in the run's files."""
from __future__ import annotations

import json

import pytest
import torch

from tracking.wandb_records import config, history, offline_runs

pytest.importorskip("wandb")


@pytest.fixture(scope="module")
def tracked(tracked_scenario):
    ref = torch.load(tracked_scenario / "run" / "last.pt", weights_only=True)["tracking"]["wandb"]
    return tracked_scenario, ref, offline_runs(tracked_scenario, ref["run_id"])


def test_the_resumes_and_the_evaluation_continue_one_run(tracked):
    root, ref, files = tracked
    assert ref["project"] == "scenario" and ref["dir"] == str(root)
    assert len(files) == 4  # three pretraining processes and the evaluation, all under one run id
    rows = history(files)
    train = [r["global_step"] for r in rows if "train/loss" in r]
    assert train == [1, 2, 3, 4, 5, 6]  # steps 4-6 trained twice, logged once
    assert [r["global_step"] for r in rows if "epoch/knn_top1" in r] == [3, 6]
    local = json.loads((root / "run" / "eval_knn.json").read_text())["metrics"]
    (evaluated,) = [r for r in rows if "eval/knn/top1" in r]
    assert evaluated["global_step"] == 6 and evaluated["eval/knn/top1"] == pytest.approx(local["top1"])


def test_options_are_the_run_config_and_artifacts_its_files(tracked):
    root, _, files = tracked
    values = config(files)
    assert values["method"] == "simclr" and values["batch_size"] == "12" and values["epochs"] == "2"
    folders = [f.parent / "files" / "contrastkit" for f in files]
    assert all((f / name).is_file() for f in folders[:3] for name in ("summary.json", "config.yaml"))
    assert all((f / "plots" / "loss_curve.png").is_file() for f in folders[:3])
    assert json.loads((folders[2] / "summary.json").read_text())["global_step"] == 6
    assert (folders[3] / "eval" / "eval_knn.json").is_file()


def test_a_resume_in_the_same_second_waits_for_its_own_offline_folder(tmp_path):
    from datetime import datetime
    import time

    from contrastkit.tracking.wandb_tracker import _wait_for_a_new_second

    stamp = lambda: datetime.fromtimestamp(time.time()).strftime("%Y%m%d_%H%M%S")  # noqa: E731
    taken = stamp()
    (tmp_path / "wandb" / f"offline-run-{taken}-abc").mkdir(parents=True)
    _wait_for_a_new_second(tmp_path, "abc")
    assert stamp() != taken
    t0 = time.perf_counter()
    _wait_for_a_new_second(tmp_path, "other-run")  # another run's folder is no reason to wait
    assert time.perf_counter() - t0 < 0.5
