"""The steps of the training loop, each called alone (issue 17): building the data, the model, the optimisation,
one epoch, the end of an epoch with its checkpoint, resuming from it, and the non-finite guard."""
from __future__ import annotations

import dataclasses
import io
import re

import pytest
import torch
from torch import nn

from conftest import make_image_folder
from contrastkit.config import PretrainConfig
from contrastkit.methods import check_options, get_method
from contrastkit.models import load_checkpoint
from contrastkit.train.data import build_data, check_data, data_info, load_splits, resolve_preset
from contrastkit.train.metrics import MetricsLog, ProgressLine
from contrastkit.train.nonfinite import NonFiniteError, NonFiniteGuard
from contrastkit.train.optim import WarmupCosine, build_optimizer
from contrastkit.train.precision import grad_scaler
from contrastkit.train.run import build_run
from contrastkit.train.state import restore
from contrastkit.train.trainer import end_epoch, train_one_epoch

CPU = torch.device("cpu")


@pytest.fixture
def cfg(tmp_path) -> PretrainConfig:
    folder = make_image_folder(tmp_path / "data", per_class=4, size=16)  # 12 training images
    return check_options(PretrainConfig(data=str(folder), out=str(tmp_path / "run"), encoder="resnet18", width=0.125,
                                        cifar_stem="on", batch_size=4, epochs=2, num_workers=0, progress=False,
                                        knn_k=3, size=16, preset="cifar", device="cpu", augment_on="device"))


def _quiet(out, enabled=False):
    return MetricsLog(out, enabled), ProgressLine(False, 0, 0, "simclr", 1)


def test_check_data_names_the_option(cfg):
    splits = load_splits(cfg)
    with pytest.raises(ValueError, match=r"--batch-size 16 is larger than the training set \(12 images\)"):
        check_data(dataclasses.replace(cfg, batch_size=16), splits, world=1, needs_labels=False)
    with pytest.raises(ValueError, match="must be divisible by the 3 processes"):
        check_data(cfg, splits, world=3, needs_labels=False)
    check_data(cfg, splits, world=2, needs_labels=False)  # 4 images over 2 processes


def _data(cfg, rank=0, world=1):
    """The run's data as build_run makes them, with SimCLR's labels."""
    splits = load_splits(cfg)
    spec = resolve_preset(cfg, splits)
    labels = torch.full((len(splits.train),), -1)
    return build_data(cfg, splits, spec, labels, 2, CPU, rank=rank, world=world)


def test_build_data_alone(cfg):
    data = _data(cfg, rank=0, world=2)
    assert data.steps_per_epoch == 3 and data.local_batch == 2 and data.n_views == 2
    assert data.augment_on == "device" and data.staged.shape == (12, 3, 16, 16)
    assert (data.labels == -1).all()  # SimCLR trains without labels
    assert len(list(data.sampler)) == 6  # this rank's half of the indices


def test_every_rank_decodes_the_monitor_arrays(cfg):
    """Rank 1 builds the monitor's arrays too: no rank works alone while the others wait in a collective."""
    data = _data(cfg, rank=1, world=2)
    assert data.monitor is not None and data.monitor.train[0].shape[0] == 12
    assert _data(dataclasses.replace(cfg, knn_every=0), 1, 2).monitor is None


def test_build_model_is_seeded(cfg):
    run_a, run_b = build_run(cfg, CPU, 0, 1), build_run(cfg, CPU, 0, 1)
    assert run_a.channels_last is False  # auto on a CPU: width 0.125 has an 8-channel strided shortcut
    for (name, pa), pb in zip(run_a.model.state_dict().items(), run_b.model.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_the_method_supplies_the_model_objective_and_labels(cfg):
    splits = load_splits(cfg)
    parts = get_method("simclr").build(cfg, data_info(cfg, splits, resolve_preset(cfg, splits)))
    assert parts.labels.shape == (12,) and (parts.labels == -1).all()
    assert parts.model.head.out_dim == 128 and parts.objective.loss.temperature == 0.5


def test_schedule_warmup_cosine_and_state():
    optimizer = build_optimizer(nn.Linear(3, 2), "sgd", 0.3, 0.9, 0.0)
    scheduler = WarmupCosine(optimizer, total_steps=6, warmup_steps=3)
    assert scheduler.factor(0) == pytest.approx(1 / 3) and scheduler.factor(2) == pytest.approx(1.0)  # warm-up
    assert scheduler.factor(6) == pytest.approx(0.0)  # cosine to min_lr_ratio 0
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.3 / 3)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()  # what resume and --extend need: numbers only
    assert state["last_epoch"] == 4 and state["total_steps"] == 6 and state["warmup_steps"] == 3
    again = WarmupCosine(build_optimizer(nn.Linear(3, 2), "sgd", 0.3, 0.9, 0.0), total_steps=6, warmup_steps=3)
    again.load_state_dict(state)
    assert again.get_last_lr() == scheduler.get_last_lr()
    again.extend(total_steps=12, warmup_steps=3)  # --extend: the current step under the new total
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(0.3 * again.factor(4)) and again.last_epoch == 4
    assert again.get_last_lr()[0] == pytest.approx(0.3 * again.factor(4))
    assert again.get_last_lr()[0] > scheduler.get_last_lr()[0]  # further from the end of the longer cosine


def test_time_schedule_follows_training_seconds():
    optimizer = build_optimizer(nn.Linear(3, 2), "sgd", 1.0, 0.9, 0.0)
    scheduler = WarmupCosine(optimizer, total_steps=1000, warmup_steps=0, budget_s=100.0)
    optimizer.step()
    scheduler.step(train_time=50.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5, abs=1e-3)  # half the budget: cos(pi/2)
    scheduler.step(train_time=100.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)


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


def _one_step(guard: NonFiniteGuard, model: nn.Module, loss_factor: float, step: int,
              x: torch.Tensor | None = None) -> torch.Tensor:
    """One step as train_one_epoch takes it: forward, loss, backward, check, scaler.step, zero_grad."""
    loss = model(torch.ones(4, 3) if x is None else x).square().mean() * loss_factor
    guard.scaler.scale(loss).backward()
    finite = guard.check(loss.detach(), step, epoch=0)
    guard.scaler.step(guard.optimizer)
    guard.scaler.update()
    guard.after_step()
    guard.optimizer.zero_grad(set_to_none=True)
    return finite


def _model_and_sgd(batch_norm: bool = False, optimizer: str = "sgd"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)) if batch_norm else nn.Linear(3, 2)
    return model, build_optimizer(model, optimizer, 0.1, 0.9, 0.0)


def _guard(mode, model, optimizer, tmp_path):
    return NonFiniteGuard(mode, model, optimizer, grad_scaler(CPU, "fp32"), CPU, tmp_path / "last.pt")


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
@pytest.mark.parametrize("first_bad", [False, True])
def test_guard_skip_mode_leaves_a_nan_step_out_on_the_device(tmp_path, optimizer, first_bad):
    """Parameters, momentum and BatchNorm statistics are as before a skipped step, also a skipped first step, and
    the next good step is the step it would have been."""
    model, opt = _model_and_sgd(batch_norm=True, optimizer=optimizer)
    guard = _guard("skip", model, opt, tmp_path)
    x = torch.randn(4, 3)
    if not first_bad:
        assert bool(_one_step(guard, model, 1.0, 0, x))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    assert not bool(_one_step(guard, model, float("nan"), 1, torch.full((4, 3), float("nan"))))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats included
    assert all(torch.equal(m, opt.state[p]["momentum_buffer"]) for m, p in zip(momentum, model.parameters()))
    assert int(guard.skipped) == 1
    twin, twin_opt = _model_and_sgd(batch_norm=True, optimizer=optimizer)  # the same run without the bad step
    twin_guard = _guard("skip", twin, twin_opt, tmp_path)
    if not first_bad:
        _one_step(twin_guard, twin, 1.0, 0, x)
    _one_step(guard, model, 1.0, 2, x)
    _one_step(twin_guard, twin, 1.0, 1, x)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))


def test_guard_stop_mode_raises_at_once_on_a_cpu(tmp_path):
    model, optimizer = _model_and_sgd()
    guard = _guard("stop", model, optimizer, tmp_path)
    with pytest.raises(NonFiniteError, match=r"step 4 \(epoch 0\).*no checkpoint was written yet"):
        _one_step(guard, model, float("inf"), 4)


def test_guard_stop_mode_deferred_as_on_a_gpu(tmp_path):
    """On a GPU the flag is not read per step: the first bad step is kept and raised at the next check."""
    model, optimizer = _model_and_sgd()
    guard = _guard("stop", model, optimizer, tmp_path)
    guard.read_at_once = False  # what a CUDA device gets
    _one_step(guard, model, 1.0, 0)
    guard.raise_pending(0)  # nothing pending
    _one_step(guard, model, float("nan"), 1)
    _one_step(guard, model, float("nan"), 2)
    with pytest.raises(NonFiniteError, match=r"step 1 \(epoch 0\)"):
        guard.raise_pending(0)


def test_the_progress_line_shows_the_epoch_and_its_knn(cfg, capsys):
    """Issue 21: the console shows the epoch number and each epoch's kNN, not only metrics.jsonl. Issue 31: when
    stderr is not a terminal (here: captured), one line per epoch, not a bar redrawn at every step."""
    from contrastkit.train import pretrain

    pretrain(dataclasses.replace(cfg, progress=True))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("simclr epoch")]
    assert [line.split(",")[0] for line in lines] == ["simclr epoch 1/2", "simclr epoch 2/2"], err[-500:]
    assert all(re.search(r", knn [01]\.\d{3}$", line) for line in lines), lines
    assert "\r" not in err and "it/s" not in err  # no tqdm redraws in a log


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_progress_is_a_bar():
    stream = _Terminal()
    bar = ProgressLine(True, 4, 0, "simclr", 2, stream=stream)
    bar.epoch(0)
    bar.update()
    bar.show(knn="0.500")
    bar.end_epoch({"epoch": 0, "loss": 1.0, "epoch_time_s": 0.1, "knn_top1": 0.5})
    bar.close()
    text = stream.getvalue()
    assert "simclr epoch 1/2" in text and "knn=0.500" in text and "\r" in text  # tqdm's redrawn line
    assert "loss 1.0000" not in text  # no epoch line on a terminal


def test_the_monitor_runs_on_every_rank_and_only_rank_0_writes(cfg):
    """Issue 16: rank 1 runs the kNN monitor itself (no rank waits alone in a collective); it writes nothing."""
    run = build_run(cfg, CPU, rank=1, world=2)  # the rank's view of a 2-process run, without a process group
    state = restore(run, None)
    log, bar = _quiet(run.out)
    train_one_epoch(run, state, 0, log, bar)
    row = end_epoch(run, state, 0, False, log, bar)
    assert 0.0 <= row["knn_top1"] <= 1.0
    assert not run.out.exists()  # rank 0 creates OUT and writes the checkpoint
