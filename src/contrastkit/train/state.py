"""Where a run stands (:class:`TrainState`), what its checkpoint holds, and resuming from one.

A checkpoint is ``{model, objective, optimizer, scheduler, scaler, epoch, step_in_epoch, global_step, train_time,
images_seen, config, rng, history, tracking, epoch_loss, meta}`` (``objective``: the objective's own state, such as
a queue of keys, empty for most methods; ``tracking``: the references of the tracked runs, so that a resume
continues them), written atomically by :func:`~contrastkit.models.save_checkpoint` at the end of every epoch (and
every ``--checkpoint-every-steps`` steps). ``--resume`` restores all of it, so a resumed run
continues bit-exactly, and its training time adds to the checkpoint's. ``--resume --extend`` continues it to a new
``--epochs`` total: the same weights, optimiser state and step, under the new total's schedule.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RUN_IDENTITY, PretrainConfig
from ..data import resolve_data
from ..models import CheckpointError, load_checkpoint

__all__ = ["TrainState", "load_resume", "restore", "checkpoint_state", "check_extension", "extension", "rng_state",
           "set_rng_state"]



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

    def count_step(self, loss: torch.Tensor, finite: torch.Tensor, seconds: float, images: int) -> None:
        """Count a finished step: its loss into the epoch's mean (a skipped, non-finite step's not; on the device),
        its time and images."""
        self.loss_sum += torch.where(finite, loss, 0.0)
        self.loss_count += finite
        self.global_step += 1
        self.step_in_epoch += 1
        self.images_seen += images
        self.train_time += seconds
        self.steps_this_run += 1
        if self.steps_this_run > 5:
            self.steady_time += seconds
            self.steady_images += images


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and python, as tensors and lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    keys = [k for k in RUN_IDENTITY if not (cfg.extend and k == "epochs")]
    fresh = PretrainConfig()  # an option a checkpoint of an older version lacks had its default
    old = {k: old.get(k, getattr(fresh, k)) for k in keys}
    diffs = [f"{k}: checkpoint {old[k]!r}, now {getattr(cfg, k)!r}" for k in keys if old[k] != getattr(cfg, k)]
    if diffs:
        hint = ""
        if any(d.startswith("epochs:") for d in diffs):
            done = int(saved["epoch"])
            hint = (f"; to train it further, to --epochs {cfg.epochs} in all, add --extend" if cfg.epochs > done else
                    f"; it has completed {done} of its {old.get('epochs')} epochs, so a new --epochs must be more "
                    f"than {done}; leave --epochs out to finish it, or evaluate it as it is (contrastkit eval)")
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


def restore(run, saved: dict[str, Any] | None) -> TrainState:
    """The state a run (:class:`~contrastkit.train.run.Run`) starts from: zero, or the checkpoint's (weights,
    optimiser, schedule, scaler, RNG).

    Raises:
        CheckpointError: the checkpoint's weights do not fit the model (loaded strictly).
    """
    state = TrainState()
    state.reset_epoch_loss(run.device)
    if saved is None:
        return state
    try:
        run.model.load_state_dict(saved["model"], strict=True)
        if "objective" in saved:
            run.objective.load_state_dict(saved["objective"], strict=True)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {run.checkpoint} does not match the model: {exc}") from exc
    run.guard.keep_buffers()  # what a skipped first step goes back to
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    if run.scaler.is_enabled() and saved.get("scaler"):
        run.scaler.load_state_dict(saved["scaler"])
    state.epoch, state.step_in_epoch = int(saved["epoch"]), int(saved["step_in_epoch"])
    state.global_step = int(saved["global_step"])
    state.history = list(saved.get("history", []))
    state.train_time = run.scheduler.train_time = float(saved.get("train_time", 0.0))  # across resumes
    state.images_seen = state.last_log_images = int(saved.get("images_seen", 0))
    state.tracking = dict(saved.get("tracking") or {})
    if run.cfg.extend:  # the rest of the run follows the new total's schedule
        run.scheduler.extend(run.cfg.epochs * run.data.steps_per_epoch,
                             int(round(run.cfg.warmup_epochs * run.data.steps_per_epoch)))
    set_rng_state(saved["rng"])
    if state.step_in_epoch >= run.data.steps_per_epoch:
        state.epoch, state.step_in_epoch = state.epoch + 1, 0
    if "epoch_loss" in saved:  # the resumed epoch's mean covers all its steps
        state.loss_sum = saved["epoch_loss"]["sum"].to(run.device)
        state.loss_count += int(saved["epoch_loss"]["count"])
    return state


def checkpoint_state(run, state: TrainState, epoch: int, step_in_epoch: int) -> dict[str, Any]:
    """The checkpoint of ``run`` at (``epoch``, ``step_in_epoch``): everything :func:`restore` reads."""
    return {
        "model": run.model.state_dict(),
        "objective": run.objective.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
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
        "meta": run.meta(),
    }
