"""Where a run stands (:class:`TrainState`), what its checkpoint holds, and resuming from one.

A checkpoint is ``{model, optimizer, scheduler, scaler, epoch, step_in_epoch, global_step, train_time, images_seen,
config, rng, history, tracking, epoch_loss, meta}`` (``tracking``: the references of the tracked runs, so that a
resume continues them), written atomically by :func:`~.checkpoint.save_checkpoint` at the end of every epoch (and
every ``--checkpoint-every-steps`` steps). ``--resume`` restores all of it, so a resumed run
continues bit-exactly, and its training time adds to the checkpoint's. ``--resume --extend`` continues it to a new
``--epochs`` total: the same weights, optimiser state and step, under the new total's schedule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import PretrainConfig
from ..data import resolve_data
from .checkpoint import CheckpointError, load_checkpoint, rng_state, set_rng_state
from .run import Run

__all__ = ["TrainState", "load_resume", "restore", "checkpoint_state", "check_extension", "extension"]

# what a resumed run must share with the checkpoint's: the model, the data, the batch, the schedule and the seed
_SAME_RUN_KEYS = ("method", "encoder", "width", "head", "head_layers", "proj_dim", "proj_hidden_dim", "cifar_stem",
                  "data", "n_views", "batch_size", "epochs", "seed", "teacher")


@dataclass
class TrainState:
    """The counters of a run. The epoch's loss sum and count stay on the device (read at the epoch's end)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    train_time: float = 0.0
    history: list = field(default_factory=list)
    loss_sum: torch.Tensor | None = None
    loss_count: torch.Tensor | None = None
    images_seen: int = 0
    steady_time: float = 0.0  # throughput after the first 5 steps of this process
    steady_images: int = 0
    steps_this_run: int = 0
    stop_reason: str = "completed"
    last_log_time: float = 0.0  # when the last step row was logged, and the images seen then (images/s)
    last_log_images: int = 0
    epoch_started: float = 0.0
    tracking: dict = field(default_factory=dict)  # {backend: reference} of the tracked runs (contrastkit.tracking)

    def reset_epoch_loss(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.loss_count = torch.zeros((), dtype=torch.long, device=device)

    def add_loss(self, loss: torch.Tensor, finite: torch.Tensor, skip: bool) -> None:
        """Count the step's loss into the epoch's mean (a skipped step's not), on the device."""
        if skip:
            self.loss_sum += torch.where(finite, loss, 0.0)
            self.loss_count += finite
        else:
            self.loss_sum += loss
            self.loss_count += 1


def load_resume(cfg: PretrainConfig) -> dict[str, Any] | None:
    """The checkpoint to resume from (``--resume``), checked to be from the same run; None for a fresh run.

    Raises:
        CheckpointError: missing or corrupt, or written by a run with other options.
    """
    if not cfg.resume:
        return None
    path = Path(cfg.out).expanduser() / "last.pt"
    saved = load_checkpoint(path)  # raises, naming the file, if missing or corrupt
    old = dict(saved["config"])
    if isinstance(old.get("data"), str):  # checkpoints of older versions hold --data as typed
        old["data"] = resolve_data(old["data"])
    keys = [k for k in _SAME_RUN_KEYS if not (cfg.extend and k == "epochs")]
    diffs = [f"{k}: checkpoint {old.get(k)!r}, now {getattr(cfg, k)!r}" for k in keys if old.get(k) != getattr(cfg, k)]
    if diffs:
        hint = (f"; to train it further, to --epochs {cfg.epochs} in all, add --extend"
                if any(d.startswith("epochs:") for d in diffs) else "")
        raise CheckpointError(f"--resume: checkpoint {path} was written by a different run ({'; '.join(diffs)}); "
                              f"use another --out or the same options{hint}")
    if cfg.extend:
        check_extension(cfg, saved)
    return saved


def check_extension(cfg: PretrainConfig, saved: dict[str, Any]) -> None:
    """``--extend``: a new ``--epochs`` total must leave steps to train after the checkpoint (the checkpoint's own
    total is a plain resume, so that a resume command can be repeated).

    Raises:
        CheckpointError: ``--epochs`` is not more than the epochs the checkpoint has completed.
    """
    done = int(saved["epoch"])  # completed epochs; a mid-epoch checkpoint is inside epoch done + 1
    if cfg.epochs != int(saved["config"]["epochs"]) and cfg.epochs <= done:
        raise CheckpointError(f"--extend: checkpoint {Path(cfg.out).expanduser() / 'last.pt'} has completed "
                              f"{done} epochs; --epochs is the new total and must be more than {done}, "
                              f"got {cfg.epochs}")


def extension(cfg: PretrainConfig, saved: dict[str, Any], steps_per_epoch: int) -> dict[str, Any] | None:
    """The ``extend`` row of metrics.jsonl when ``--extend`` gives the run a new total of epochs; None when it
    does not (no ``--extend``, or ``--epochs`` as the checkpoint's: a plain resume)."""
    previous = int(saved["config"]["epochs"])
    if not cfg.extend or cfg.epochs == previous:
        return None
    return {"kind": "extend", "epoch": int(saved["epoch"]), "step_in_epoch": int(saved["step_in_epoch"]),
            "step": int(saved["global_step"]), "previous_epochs": previous, "epochs": cfg.epochs,
            "total_steps": cfg.epochs * steps_per_epoch}


def restore(run: Run, saved: dict[str, Any] | None) -> TrainState:
    """The state a run starts from: zero, or the checkpoint's (weights, optimiser, schedule, scaler, RNG).

    Raises:
        CheckpointError: the checkpoint's weights do not fit the model (loaded strictly).
    """
    state = TrainState()
    state.reset_epoch_loss(run.device)
    if saved is None:
        return state
    try:
        run.model.load_state_dict(saved["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {run.checkpoint} does not match the model: {exc}") from exc
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    if run.scaler is not None and saved.get("scaler"):
        run.scaler.load_state_dict(saved["scaler"])
    state.epoch, state.step_in_epoch = int(saved["epoch"]), int(saved["step_in_epoch"])
    state.global_step = int(saved["global_step"])
    state.history = list(saved.get("history", []))
    state.train_time = run.schedule.train_time = float(saved.get("train_time", 0.0))  # across resumes
    state.images_seen = state.last_log_images = int(saved.get("images_seen", 0))
    state.tracking = dict(saved.get("tracking") or {})
    if run.cfg.extend:
        _follow_new_schedule(run, state.global_step)
    set_rng_state(saved["rng"])
    if state.step_in_epoch >= run.data.steps_per_epoch:
        state.epoch, state.step_in_epoch = state.epoch + 1, 0
    if "epoch_loss" in saved:  # the resumed epoch's mean covers all its steps
        state.loss_sum = saved["epoch_loss"]["sum"].to(run.device)
        state.loss_count += int(saved["epoch_loss"]["count"])
    return state


def _follow_new_schedule(run: Run, step: int) -> None:
    """``--extend``: the learning rate of ``step`` from the new total's schedule (the optimiser's saved one is the
    old schedule's); the steps after it follow the new schedule through the scheduler."""
    lrs = [base * run.schedule(step) for base in run.scheduler.base_lrs]
    for group, lr in zip(run.optimizer.param_groups, lrs):
        group["lr"] = lr
    run.scheduler._last_lr = lrs  # what get_last_lr() reports


def checkpoint_state(run: Run, state: TrainState, epoch: int, step_in_epoch: int) -> dict[str, Any]:
    """The checkpoint of ``run`` at (``epoch``, ``step_in_epoch``): everything :func:`restore` reads."""
    data = run.data
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": state.global_step,
        "train_time": state.train_time,
        "images_seen": state.images_seen,
        "config": run.cfg.to_dict(),
        "rng": rng_state(),
        "history": state.history,
        "tracking": state.tracking,
        "epoch_loss": {"sum": state.loss_sum.detach().cpu().clone(), "count": int(state.loss_count)},
        "meta": {"encoder": run.cfg.encoder, "feature_dim": run.model.encoder.feature_dim,
                 "image_size": data.spec.size, "preset": data.spec.preset, "mean": list(data.mean),
                 "std": list(data.std), "classes": data.splits.classes, "data": run.cfg.data,
                 "method": run.cfg.method},
    }
