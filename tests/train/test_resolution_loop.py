"""The resolution schedule in the training loop (issue 27): the views follow it by steps or by training seconds,
the options that refuse it; and the timed kNN monitor (--knn-every-s) that records an accuracy-over-time curve."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from conftest import make_image_folder
from contrastkit.config import PretrainConfig
from contrastkit.train import pretrain
from contrastkit.train.run import build_run
from contrastkit.train.trainer import batch_views

CPU = torch.device("cpu")


@pytest.fixture
def cfg(tmp_path) -> PretrainConfig:
    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)  # 12 training images
    return PretrainConfig(data=str(folder), out=str(tmp_path / "run"), encoder="resnet18", width=0.125,
                          cifar_stem="on", batch_size=4, epochs=2, num_workers=0, progress=False, knn_k=3,
                          size=16, preset="cifar", device="cpu", augment_on="device", knn_every=0,
                          size_schedule="8:0.5,12:0.75")


def test_the_loop_makes_views_of_the_scheduled_size(cfg):
    run = build_run(cfg, CPU, 0, 1)
    idx = torch.arange(4)
    sides = {step: batch_views(run, None, idx, 0, step)[0].shape[-1] for step in range(6)}  # 6 steps in the run
    assert sides == {0: 8, 1: 8, 2: 8, 3: 12, 4: 12, 5: 16}  # progress = step / 6
    run = build_run(dataclasses.replace(cfg, schedule="time", time_budget_s=10.0), CPU, 0, 1)
    for seconds, side in ((0.0, 8), (4.9, 8), (6.0, 12), (8.0, 16), (20.0, 16)):
        run.schedule.train_time = seconds
        assert batch_views(run, None, idx, 0, 0)[0].shape[-1] == side
    plain = build_run(dataclasses.replace(cfg, size_schedule=""), CPU, 0, 1)
    assert batch_views(plain, None, idx, 0, 0)[0].shape[-1] == 16


def test_a_scheduled_run_trains_and_scores_at_full_size(cfg):
    summary = pretrain(dataclasses.replace(cfg, knn_every=2))
    assert summary["global_step"] == 6 and 0.0 <= summary["knn_top1"] <= 1.0


def test_options_that_refuse_a_schedule(cfg):
    with pytest.raises(ValueError, match="--size-schedule '16:1.5'"):
        dataclasses.replace(cfg, size_schedule="16:1.5").validate()
    with pytest.raises(ValueError, match="needs the batched augmentation .*--augment-on workers"):
        dataclasses.replace(cfg, augment_on="workers").validate()


def test_the_timed_monitor_writes_a_curve(cfg, tmp_path):
    """--knn-every-s: kNN rows mid-epoch at the training time they were taken, none of it counted as training."""
    cfg = dataclasses.replace(cfg, knn_every_s=1e-6, max_steps=4, size_schedule="")  # every step crosses one
    summary = pretrain(cfg)
    rows = [json.loads(line) for line in Path(cfg.out, "metrics.jsonl").read_text().splitlines()]
    knn = [r for r in rows if r["kind"] == "knn"]
    assert [r["step"] for r in knn] == [1, 2, 3, 4]
    assert all(0.0 <= r["knn_top1"] <= 1.0 for r in knn)
    times = [r["train_time_s"] for r in knn]
    assert times == sorted(times) and times[-1] == pytest.approx(summary["train_time_s"], abs=0.01)
    assert summary["knn_top1"] is None  # the epoch-end monitor stays off (--knn-every 0)
