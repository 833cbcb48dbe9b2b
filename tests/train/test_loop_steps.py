"""The steps of the training loop, each called alone (issue 17): building the data, the model, the optimisation,
one epoch, the end of an epoch with its checkpoint, resuming from it, and the non-finite guard."""
from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from torch import nn

from conftest import make_image_folder
from contrastkit.config import PretrainConfig
from contrastkit.train.checkpoint import load_checkpoint
from contrastkit.train.metrics import MetricsLog, ProgressLine
from contrastkit.train.nonfinite import NonFiniteError, NonFiniteGuard
from contrastkit.train.run import build_data, build_model, build_optimisation, build_run, check_data
from contrastkit.train.setup import load_splits
from contrastkit.train.state import restore
from contrastkit.train.trainer import end_epoch, train_one_epoch

CPU = torch.device("cpu")


@pytest.fixture
def cfg(tmp_path) -> PretrainConfig:
    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)  # 12 training images
    return PretrainConfig(data=str(folder), out=str(tmp_path / "run"), encoder="resnet18", width=0.125,
                          cifar_stem="on", batch_size=4, epochs=2, num_workers=0, progress=False, knn_k=3,
                          size=16, preset="cifar", device="cpu", augment_on="device")


def _quiet(out, enabled=False):
    return MetricsLog(out, enabled), ProgressLine(False, 0, 0, "simclr", 1)


def test_check_data_names_the_option(cfg):
    splits = load_splits(cfg)
    with pytest.raises(ValueError, match=r"--batch-size 16 is larger than the training set \(12 images\)"):
        check_data(dataclasses.replace(cfg, batch_size=16), splits, world=1)
    with pytest.raises(ValueError, match="must be divisible by the 3 processes"):
        check_data(cfg, splits, world=3)
    check_data(cfg, splits, world=2)  # 4 images over 2 processes


def test_build_data_alone(cfg):
    data = build_data(cfg, load_splits(cfg), CPU, rank=0, world=2)
    assert data.steps_per_epoch == 3 and data.local_batch == 2 and data.n_views == 2
    assert data.augment_on == "device" and data.staged.shape == (12, 3, 16, 16)
    assert (data.labels == -1).all()  # SimCLR trains without labels
    assert len(list(data.sampler)) == 6  # this rank's half of the indices


def test_every_rank_decodes_the_monitor_arrays(cfg):
    """Rank 1 builds the monitor's arrays too: no rank works alone while the others wait in a collective."""
    data = build_data(cfg, load_splits(cfg), CPU, rank=1, world=2)
    assert data.monitor is not None and data.monitor.train[0].shape[0] == 12
    assert build_data(dataclasses.replace(cfg, knn_every=0), load_splits(cfg), CPU, 1, 2).monitor is None


def test_build_model_is_seeded(cfg):
    data = build_data(cfg, load_splits(cfg), CPU, rank=0, world=1)
    (a, cl_a), (b, _) = build_model(cfg, data, CPU, 1), build_model(cfg, data, CPU, 1)
    assert cl_a is False  # auto on a CPU: width 0.125 has an 8-channel strided shortcut (train/memory_format.py)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_build_optimisation_schedule_and_state(cfg):
    model = nn.Linear(3, 2)
    optimizer, schedule, scheduler, scaler = build_optimisation(dataclasses.replace(cfg, warmup_epochs=1.0), model,
                                                                steps_per_epoch=3, device=CPU)
    assert scaler is None and schedule.total_steps == 6 and schedule.warmup_steps == 3
    assert schedule(0) == pytest.approx(1 / 3) and schedule(2) == pytest.approx(1.0)  # linear warm-up
    assert schedule(6) == pytest.approx(0.0)  # cosine to min_lr_ratio 0
    assert optimizer.param_groups[0]["lr"] == pytest.approx(schedule(0) * optimizer.param_groups[0]["initial_lr"])
    # a checkpointable schedule: its state holds numbers, not the run's config
    torch.save(scheduler.state_dict(), "/dev/null")
    assert all(not isinstance(v, PretrainConfig) for v in scheduler.state_dict().values())


def test_one_epoch_alone_then_its_end_and_a_resume(cfg):
    run = build_run(cfg, CPU, rank=0, world=1)
    state = restore(run, None)
    before = [p.detach().clone() for p in run.model.parameters()]
    log, bar = _quiet(run.out)
    assert train_one_epoch(run, state, 0, log, bar) is False  # the epoch ran to its end
    assert state.global_step == 3 and state.step_in_epoch == 3 and int(state.loss_count) == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))
    row = end_epoch(run, state, 0, False, log, bar)
    assert row["kind"] == "epoch" and row["step"] == 3 and 0.0 <= row["knn_top1"] <= 1.0
    assert state.step_in_epoch == 0 and int(state.loss_count) == 0
    saved = load_checkpoint(run.checkpoint)
    assert (saved["epoch"], saved["step_in_epoch"], saved["global_step"]) == (1, 0, 3)

    again = build_run(dataclasses.replace(cfg, resume=True), CPU, rank=0, world=1, fresh=False)
    resumed = restore(again, saved)
    assert (resumed.epoch, resumed.step_in_epoch, resumed.global_step) == (1, 0, 3)
    for a, b in zip(run.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_max_steps_stops_the_epoch(cfg):
    run = build_run(dataclasses.replace(cfg, max_steps=2), CPU, rank=0, world=1)
    state = restore(run, None)
    assert train_one_epoch(run, state, 0, *_quiet(run.out)) is True
    assert state.global_step == 2 and state.stop_reason == "max_steps"


def _one_step(guard: NonFiniteGuard, model: nn.Module, loss_factor: float, step: int) -> torch.Tensor:
    guard.before_forward()
    loss = model(torch.ones(4, 3)).square().mean() * loss_factor
    loss.backward()
    finite = guard.step(loss.detach(), step, epoch=0)
    guard.optimizer.zero_grad(set_to_none=True)
    return finite


def _linear_and_sgd():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def test_guard_skip_mode_undoes_a_nan_step_on_the_device(tmp_path):
    model, optimizer = _linear_and_sgd()
    guard = NonFiniteGuard("skip", model, optimizer, None, CPU, tmp_path / "last.pt")
    assert bool(_one_step(guard, model, 1.0, 0))
    after_good = [p.detach().clone() for p in model.parameters()]
    assert not bool(_one_step(guard, model, float("nan"), 1))
    assert all(torch.equal(a, b) for a, b in zip(after_good, model.parameters()))
    assert int(guard.skipped) == 1


def test_guard_stop_mode_raises_at_once_on_a_cpu(tmp_path):
    model, optimizer = _linear_and_sgd()
    guard = NonFiniteGuard("stop", model, optimizer, None, CPU, tmp_path / "last.pt")
    with pytest.raises(NonFiniteError, match=r"step 4 \(epoch 0\).*no checkpoint was written yet"):
        _one_step(guard, model, float("inf"), 4)


def test_guard_stop_mode_deferred_as_on_a_gpu(tmp_path):
    """On a GPU the flag is not read per step: the first bad step is kept and raised at the next check."""
    model, optimizer = _linear_and_sgd()
    guard = NonFiniteGuard("stop", model, optimizer, None, CPU, tmp_path / "last.pt")
    guard.read_at_once = False  # what a CUDA device gets
    _one_step(guard, model, 1.0, 0)
    guard.check(0)  # nothing pending
    _one_step(guard, model, float("nan"), 1)
    _one_step(guard, model, float("nan"), 2)
    with pytest.raises(NonFiniteError, match=r"step 1 \(epoch 0\)"):
        guard.check(0)


def test_the_progress_line_shows_the_epoch_and_its_knn(cfg, capsys):
    """Issue 21: the console shows the epoch number and each epoch's kNN, not only metrics.jsonl."""
    from contrastkit.train import pretrain

    pretrain(dataclasses.replace(cfg, progress=True))
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert re.search(r"knn=[01]\.\d{3}", err), err[-500:]


def test_the_monitor_runs_on_every_rank_and_only_rank_0_writes(cfg):
    """Issue 16: rank 1 runs the kNN monitor itself (no rank waits alone in a collective); it writes nothing."""
    run = build_run(cfg, CPU, rank=1, world=2)  # the rank's view of a 2-process run, without a process group
    state = restore(run, None)
    log, bar = _quiet(run.out)
    train_one_epoch(run, state, 0, log, bar)
    row = end_epoch(run, state, 0, False, log, bar)
    assert 0.0 <= row["knn_top1"] <= 1.0
    assert not run.out.exists()  # rank 0 creates OUT and writes the checkpoint
