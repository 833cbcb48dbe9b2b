"""The pretraining loop, for every method (:mod:`contrastkit.methods`).

:func:`pretrain` reads like torchvision's reference ``train.py``: check the options, build the run (:mod:`.run`),
then for each epoch :func:`train_one_epoch`, the kNN monitor (:mod:`.monitor`) and a checkpoint (:mod:`.state`).
The step is in :func:`train_one_epoch`, in order: forward, loss, backward, the finite check, ``scaler.step``,
``scheduler.step``. It runs as one process or under ``torchrun`` (DistributedDataParallel, one process per
device); only rank 0 writes files and shows progress. A step reads nothing back from a GPU: the loss is logged
every ``--log-every`` steps, and non-finite steps are handled on the device (:mod:`.nonfinite`).

Training time, which ``--time-budget-s`` and ``--schedule time`` count, is the time from the end of one step's
bookkeeping to the end of the next step: making the batch included, logging, checkpoints and the kNN monitor not.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from ..config import PretrainConfig
from ..data import resolve_data
from ..methods import check_options, get_method
from ..models import save_checkpoint
from ..runtime import malloc_state, resolve_device
from ..tracking import start_tracking
from .forward import forward_views
from .gradcache import cached_backward
from .metrics import MetricsLog, ProgressLine
from .monitor import knn_monitor, monitor_due, timed_monitor_due
from .nonfinite import NonFiniteError
from .precision import resolve_precision
from .run import Run, build_run, fit_to_data, process_group, unwrap
from .run_folder import RunFolder, check_fresh_out
from .state import TrainState, checkpoint_state, extension, load_resume, restore

__all__ = ["pretrain", "train_one_epoch", "end_epoch", "save", "summarize", "sync_guard", "NonFiniteError", "unwrap"]


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run pretraining as configured; returns a summary (also written to ``OUT/summary.json``).

    Raises:
        ValueError: bad options or data, or an ``out`` that holds a run (without ``resume`` or ``overwrite``),
            before any training.
        CheckpointError: ``resume`` with a missing/corrupt checkpoint or one from another model.
        NonFiniteError: a NaN/inf loss or gradient with ``on_nonfinite="stop"``.
    """
    cfg = check_options(cfg)  # every option, and the method's defaults (SupCon's temperature 0.1 unless set)
    cfg = dataclasses.replace(cfg, data=resolve_data(cfg.data))  # a folder as an absolute path
    check_fresh_out(cfg)  # on every rank, before any rank can write to OUT
    device = resolve_device(cfg.device, "--device")
    with process_group(device, cfg.dist_timeout_s) as (rank, world):  # torchrun's group, left when the run ends
        return _run_in_group(cfg, device, rank, world)


def _run_in_group(cfg: PretrainConfig, device: torch.device, rank: int, world: int) -> dict[str, Any]:
    """Build the run from ``cfg`` as process ``rank`` of ``world`` and train it; rank 0 holds ``OUT``'s lock."""
    folder = RunFolder.open(cfg, get_method(cfg.method).writes) if rank == 0 else None  # the lock, until the end
    failed = True
    try:
        cfg, splits = fit_to_data(cfg, world, rank == 0)  # an unset batch size chosen before the resume's check
        saved = load_resume(cfg)
        run = build_run(cfg, device, rank, world, fresh=saved is None, folder=folder, splits=splits)
        state = restore(run, saved)
        with run.stop:  # SIGINT, SIGTERM, SIGUSR1: a checkpoint at the next step, then Interrupted
            summary = _train(run, state, saved)
        failed = False
        return summary
    finally:
        if folder is not None:
            if failed and not cfg.resume:  # a failed start leaves nothing behind (a started run is kept whole)
                folder.discard()
            folder.close(remove=failed and folder.created)


def _train(run: Run, state: TrainState, saved: dict | None) -> dict[str, Any]:
    """Train ``run`` from ``state`` (zero, or restored from the checkpoint ``saved``) and summarise."""
    cfg = run.cfg
    if run.is_main:
        cfg.save_yaml(run.out / "config.yaml")
    tracker = start_tracking(cfg, run.out, state.tracking, None if saved is None else state.global_step, run.is_main)
    state.tracking = tracker.references()  # stored in every checkpoint: a resume continues the same tracked runs
    log = MetricsLog(run.out, run.is_main, fresh=saved is None,
                     resumed_at=None if saved is None else state.global_step, tracker=tracker)
    if saved is not None and (extended := extension(cfg, saved, run.data.steps_per_epoch)) is not None:
        log.write(extended, state.global_step)
    bar = ProgressLine(run.is_main and cfg.progress, cfg.epochs * run.data.steps_per_epoch, state.global_step,
                       cfg.method, cfg.epochs)
    state.last_log_time = time.perf_counter()
    try:
        for epoch in range(state.epoch, cfg.epochs):
            bar.epoch(epoch)
            stopping = train_one_epoch(run, state, epoch, log, bar)
            end_epoch(run, state, epoch, stopping, log, bar)
            if stopping:
                break
        run.stop.raise_if_received()  # stopped by a signal: the checkpoint is saved, the CLI prints how to resume
    except BaseException as exc:
        tracker.abort(exc)  # the tracked runs end as failed (killed on Ctrl-C)
        raise
    finally:
        bar.close()
        log.close()
    return tracker.finish(summarize(run, state))  # summary, config.yaml and plots as artifacts


def train_one_epoch(run: Run, state: TrainState, epoch: int, log: MetricsLog, bar: ProgressLine) -> bool:
    """Train ``epoch`` from ``state.step_in_epoch`` on; returns whether the run stops (``--max-steps`` or
    ``--time-budget-s`` reached, or a signal received: :mod:`.signals`)."""
    cfg, model, objective = run.cfg, run.train_model, run.objective
    optimizer, scheduler, scaler, guard = run.optimizer, run.scheduler, run.scaler, run.guard
    model.train()
    state.epoch_started = clock = time.perf_counter()
    # views (N, V, C, H, W), labels (N,); a resolution schedule sizes the views by the schedule's progress
    for views, labels in run.data.batches(epoch, state.step_in_epoch, state.global_step, scheduler.progress):
        # the first step sets up (cuDNN, caches); a run that stops on an exception leaves the check too
        with sync_guard(cfg.sync_debug and state.steps_this_run > 0):
            if cfg.micro_batch_size and cfg.micro_batch_size < views.shape[0]:  # gradient caching, same gradient
                loss = cached_backward(model, objective, views, labels, cfg.micro_batch_size, run.autocast,
                                       run.channels_last, scale=scaler.scale)
            else:
                outputs = forward_views(model, views, run.channels_last, run.autocast)  # (N, V, D)
                loss = objective(outputs, labels)
                scaler.scale(loss).backward()
                loss = loss.detach()
            finite = guard.check(loss, state.global_step, epoch)  # all-reduced; stop raises, skip masks the step
            scaler.step(optimizer)  # fp16: skips an overflowing step, on the device
            scaler.update()
            guard.after_step()
            optimizer.zero_grad(set_to_none=True)
            trained_before = state.train_time
            state.count_step(loss, finite, time.perf_counter() - clock, views.shape[0] * run.world)
            scheduler.step(train_time=state.train_time)
        log_now = state.global_step % cfg.log_every == 0 or state.step_in_epoch == run.data.steps_per_epoch
        if log_now:
            log_step(run, state, epoch, loss, finite, log, bar)
        if run.data.monitor is not None and timed_monitor_due(cfg, trained_before, state.train_time):
            log.write(timed_knn_row(run, state, epoch), state.global_step)  # --knn-every-s, not training time
        bar.update()
        if cfg.checkpoint_every_steps and state.global_step % cfg.checkpoint_every_steps == 0 \
                and state.step_in_epoch < run.data.steps_per_epoch:
            save(run, state, epoch, state.step_in_epoch)
        if cfg.max_steps and state.global_step >= cfg.max_steps:
            state.stop_reason = "max_steps"
            return True
        if cfg.time_budget_s and state.train_time >= cfg.time_budget_s:
            state.stop_reason = "time_budget"
            return True
        if run.stop.requested(log_now, run.device):
            state.stop_reason = "signal"
            return True
        clock = time.perf_counter()
    return False


def timed_knn_row(run: Run, state: TrainState, epoch: int) -> dict:
    """A ``knn`` row of metrics.jsonl: the kNN monitor mid-epoch (``--knn-every-s``), at this training time."""
    knn = knn_monitor(unwrap(run.model).encoder, run.data.monitor, run.cfg, run.device)  # restores train mode
    return {"kind": "knn", "step": state.global_step, "epoch": epoch, "train_time_s": state.train_time,
            "knn_top1": knn}


def log_step(run: Run, state: TrainState, epoch: int, loss: torch.Tensor, finite: torch.Tensor, log: MetricsLog,
             bar: ProgressLine) -> None:
    """A ``step`` row of metrics.jsonl and the progress line (reads the loss back: a sync on GPUs)."""
    run.guard.raise_pending(epoch)
    if run.guard.skip and not bool(finite):  # a skipped step logs no loss
        return
    now = time.perf_counter()
    ips = (state.images_seen - state.last_log_images) / max(now - state.last_log_time, 1e-9)
    state.last_log_time, state.last_log_images = now, state.images_seen
    row = {"kind": "step", "step": state.global_step, "epoch": epoch, "loss": float(loss),
           "lr": run.optimizer.param_groups[0]["lr"], "images_per_s": ips}
    log.write(row, state.global_step)
    bar.show(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.3g}", img_s=f"{ips:.0f}")


def end_epoch(run: Run, state: TrainState, epoch: int, stopping: bool, log: MetricsLog, bar: ProgressLine) -> dict:
    """After (part of) ``epoch``: the epoch's row (mean loss, times, kNN when due) and a checkpoint."""
    cfg = run.cfg
    finished = state.step_in_epoch >= run.data.steps_per_epoch
    count = int(state.loss_count)
    row = {"kind": "epoch", "epoch": epoch, "step": state.global_step,
           "loss": float(state.loss_sum / count) if count else float("nan"),
           "epoch_time_s": time.perf_counter() - state.epoch_started, "train_time_s": state.train_time}
    if run.data.monitor is not None and run.stop.received is None and monitor_due(cfg, epoch, finished, stopping):
        row["knn_top1"] = knn_monitor(unwrap(run.model).encoder, run.data.monitor, cfg, run.device)
        bar.show(knn=f"{row['knn_top1']:.3f}")
    state.history.append(row)
    log.write(row, state.global_step)
    bar.end_epoch(row)
    if finished:
        state.reset_epoch_loss(run.device)
        save(run, state, epoch + 1, 0)
        state.step_in_epoch = 0
    else:  # the checkpoint keeps the partial epoch's loss sum, which a resume continues
        save(run, state, epoch, state.step_in_epoch)
    return row


def save(run: Run, state: TrainState, epoch: int, step_in_epoch: int) -> None:
    """Checkpoint the run at (``epoch``, ``step_in_epoch``) on rank 0; a pending non-finite step raises instead,
    so that no checkpoint holds one."""
    run.guard.raise_pending(epoch)
    if run.is_main:
        save_checkpoint(checkpoint_state(run, state, epoch, step_in_epoch), run.checkpoint)
        if run.folder is not None:
            run.folder.saved()  # an old run that --overwrite replaces goes once this checkpoint is in place


def summarize(run: Run, state: TrainState) -> dict[str, Any]:
    """The run's summary, with what the method adds at the end, written to ``OUT/summary.json`` by rank 0."""
    cfg, history = run.cfg, state.history
    bad_files = run.data.bad_files_log
    summary = {
        "out": str(run.out), "checkpoint": str(run.checkpoint), "method": cfg.method, "data": cfg.data,
        "epochs": cfg.epochs, "global_step": state.global_step, "stop_reason": state.stop_reason,
        "train_time_s": round(state.train_time, 2),
        "images_per_s": round(state.images_seen / max(state.train_time, 1e-9), 1),
        "images_per_s_steady": round(state.steady_images / state.steady_time, 1) if state.steady_time else None,
        "final_loss": history[-1]["loss"] if history else None,
        "knn_top1": next((r["knn_top1"] for r in reversed(history) if "knn_top1" in r), None),
        "skipped_nonfinite_steps": int(run.guard.skipped),
        "skipped_bad_files": _count_bad_files(bad_files) if bad_files is not None else 0,
        "world_size": run.world,
        "rank": run.rank,
        "precision": resolve_precision(run.device, cfg.precision),
        "channels_last": run.channels_last,
        "compiled": bool(cfg.compile),
        "augment_on": run.data.augment_on,
        "grad_scale": run.scaler.get_scale() if run.scaler.is_enabled() else None,
        "malloc": malloc_state(),
    }
    if run.is_main:
        if run.method.finish is not None:
            summary.update(run.method.finish(cfg, run.parts, run.meta(), summary))
        (run.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def _count_bad_files(log: Path) -> int:
    return len({line for line in log.read_text().splitlines() if line}) if log.is_file() else 0


@contextlib.contextmanager
def sync_guard(enabled: bool):
    """Within: any CUDA host synchronisation raises (``torch.cuda.set_sync_debug_mode("error")``) when enabled."""
    if not enabled:
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)
