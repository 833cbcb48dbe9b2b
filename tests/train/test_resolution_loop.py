"""The resolution schedule in the training loop (issue 27): the views follow it by steps or by training seconds,
the options that refuse it; and the timed kNN monitor (--knn-every-s) that records an accuracy-over-time curve."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import make_image_folder
from contrastkit.config import PretrainConfig
from contrastkit.methods import check_options
from contrastkit.train import pretrain
from contrastkit.train.run import build_run

CPU = torch.device("cpu")


@pytest.fixture
def cfg(tmp_path) -> PretrainConfig:
    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)  # 12 training images
    return PretrainConfig(data=str(folder), out=str(tmp_path / "run"), encoder="resnet18", width=0.125,
                          cifar_stem="on", batch_size=4, epochs=2, num_workers=0, progress=False, knn_k=3,
                          size=16, preset="cifar", device="cpu", augment_on="device", knn_every=0,
                          size_schedule="8:0.5,12:0.75")


def _sides_by_step(cfg) -> list[int]:
    """The view side of every batch of a 2-epoch run (6 steps, progress = step / 6), stepping the scheduler."""
    run = build_run(check_options(cfg), CPU, 0, 1)
    sides = []
    for epoch in range(2):
        for views, labels in run.data.batches(epoch, 0, run.scheduler.last_epoch, run.scheduler.progress):
            assert views.shape[:3] == (4, 2, 3) and views.shape[-1] == views.shape[-2] and labels.shape == (4,)
            sides.append(views.shape[-1])
            run.optimizer.step()  # no gradients: nothing moves; the scheduler expects it first
            run.scheduler.step()
    return sides


def test_the_batches_follow_the_schedule_by_steps(cfg):
    """TrainData.batches reads the schedule's progress before each batch."""
    assert _sides_by_step(cfg) == [8, 8, 8, 12, 12, 16]
    plain = build_run(check_options(dataclasses.replace(cfg, size_schedule="")), CPU, 0, 1)
    assert {views.shape[-1] for views, _ in plain.data.batches(0, 0, 0, plain.scheduler.progress)} == {16}


def test_a_last_part_at_one_never_trains_at_the_run_size(cfg):
    """``12:1`` as the last part is accepted and holds to the last step, none at the run's 16 px (size_at at
    progress 1: tests/augment/test_resolution.py)."""
    assert _sides_by_step(dataclasses.replace(cfg, size_schedule="8:0.5,12:1")) == [8, 8, 8, 12, 12, 12]


def test_the_batches_follow_the_schedule_by_training_seconds(cfg):
    run = build_run(check_options(dataclasses.replace(cfg, schedule="time", time_budget_s=10.0)), CPU, 0, 1)
    for seconds, side in ((0.0, 8), (4.9, 8), (6.0, 12), (8.0, 16), (20.0, 16)):
        run.optimizer.step()
        run.scheduler.step(train_time=seconds)
        assert run.data.view_size(run.scheduler.progress()) == side
        views, _ = next(iter(run.data.batches(0, 0, 0, run.scheduler.progress)))
        assert views.shape[-2:] == (side, side)


def test_the_same_draws_at_every_size(cfg):
    """A batch's crops and colours depend on (seed, epoch, step), not on its size."""
    data = build_run(check_options(cfg), CPU, 0, 1).data
    idx = torch.arange(4)
    small, full = data.augment(idx, 0, 5, size=8), data.augment(idx, 0, 5)
    assert small.shape == (4, 2, 3, 8, 8) and full.shape == (4, 2, 3, 16, 16)
    pooled = torch.nn.functional.avg_pool2d(full.flatten(0, 1), 2)
    other = torch.nn.functional.avg_pool2d(data.augment(idx, 0, 6).flatten(0, 1), 2)
    assert (small.flatten(0, 1) - pooled).abs().mean() < (small.flatten(0, 1) - other).abs().mean()


def test_a_scheduled_run_trains_and_scores_at_full_size(cfg):
    summary = pretrain(dataclasses.replace(cfg, knn_every=2))
    assert summary["global_step"] == 6 and 0.0 <= summary["knn_top1"] <= 1.0


def test_options_that_refuse_a_schedule(cfg):
    with pytest.raises(ValueError, match="--size-schedule '16:1.5'"):
        dataclasses.replace(cfg, size_schedule="16:1.5").validate()
    with pytest.raises(ValueError, match="needs the batched augmentation .*--augment-on workers"):
        dataclasses.replace(cfg, augment_on="workers").validate()


def test_auto_augmentation_on_mixed_sizes_refuses_a_schedule(cfg, tmp_path):
    """--augment-on auto picks the workers for images of several sizes: the schedule is refused by name, before
    anything is written."""
    Image.new("RGB", (20, 24), (200, 10, 10)).save(Path(cfg.data, "train", "class_0", "wide.png"))
    cfg = dataclasses.replace(cfg, augment_on="auto", out=str(tmp_path / "mixed"))
    with pytest.raises(ValueError, match="--size-schedule '8:0.5,12:0.75' needs the batched augmentation.*"
                                         "--augment-on workers"):
        pretrain(cfg)
    assert not Path(cfg.out).exists()


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
