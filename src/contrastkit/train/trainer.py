"""The pretraining loop: SimCLR, SupCon and the cross-entropy baseline.

:func:`pretrain` reads like torchvision's reference ``train.py``: build the run (:mod:`.run`), then for each epoch
:func:`train_one_epoch`, the kNN monitor (:mod:`.monitor`) and a checkpoint (:mod:`.state`). It runs as one process
or under ``torchrun`` (DistributedDataParallel, one process per device); only rank 0 writes files and shows
progress. A step reads nothing back from a GPU: the loss is logged every ``--log-every`` steps, non-finite steps are
handled on the device (:mod:`.nonfinite`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..allocator import malloc_state
from ..config import PretrainConfig
from ..data import batch_to_device, resolve_data, seed_for
from ..device import resolve_device
from ..tracking import start_tracking
from .checkpoint import save_checkpoint
from .metrics import MetricsLog, ProgressLine
from .monitor import knn_monitor, monitor_due
from .nonfinite import NonFiniteError
from .precision import autocast, resolve_precision, upcast
from .run import Run, build_run, init_distributed, unwrap, wrap_model
from .rundir import check_fresh_out, discard_failed_start
from .state import TrainState, checkpoint_state, extension, load_resume, restore

__all__ = ["pretrain", "train_one_epoch", "train_step", "end_epoch", "save", "summarize", "sync_guard", "NonFiniteError",
           "unwrap"]


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run pretraining as configured; returns a summary (also written to ``OUT/summary.json``).

    Raises:
        ValueError: bad options or data, or an ``out`` that holds a run (without ``resume`` or ``overwrite``),
            before any training.
        CheckpointError: ``resume`` with a missing/corrupt checkpoint or one from another model.
        NonFiniteError: a NaN/inf loss or gradient with ``on_nonfinite="stop"``.
    """
    cfg = cfg.with_method_defaults()  # e.g. SupCon's temperature 0.1 unless one is set
    cfg.validate()
    cfg = dataclasses.replace(cfg, data=resolve_data(cfg.data))  # a folder as an absolute path
    check_fresh_out(cfg)  # on every rank, before any rank can write to OUT
    out = Path(cfg.out).expanduser()
    created = not out.exists()
    device = resolve_device(cfg.device, "--device")
    rank, world = init_distributed(device, cfg.dist_timeout_s)
    saved = load_resume(cfg)
    try:
        return _train(cfg, device, rank, world, saved)
    except Exception:
        if rank == 0 and saved is None:  # a failed start leaves nothing behind (a started run is kept whole)
            discard_failed_start(out, created)
        raise


def _train(cfg: PretrainConfig, device: torch.device, rank: int, world: int, saved: dict | None) -> dict[str, Any]:
    """Build the run, restore it from ``saved`` (a resumed checkpoint, or None), train it, and summarise."""
    run = build_run(cfg, device, rank, world, fresh=saved is None)
    state = restore(run, saved)
    run.train_model = wrap_model(run.model, cfg, device, world)
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
    except BaseException as exc:
        tracker.abort(exc)  # the tracked runs end as failed (killed on Ctrl-C)
        raise
    finally:
        bar.close()
        log.close()
    return tracker.finish(summarize(run, state))  # summary, config.yaml and plots as artifacts


def epoch_batches(run: Run, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor | None, torch.Tensor]]:
    """This rank's batches of ``epoch`` from step ``start_step`` on: (views, indices) from DataLoader workers, or
    (None, indices) for ``--augment-on device`` (the views are made on the device by :func:`batch_views`)."""
    data, cfg = run.data, run.cfg
    data.sampler.set_epoch(epoch)
    order = list(data.sampler)[start_step * data.local_batch:]
    if data.staged is None:
        data.dataset.set_epoch(epoch)
        loader = DataLoader(data.dataset, batch_size=data.local_batch, sampler=order, drop_last=True,
                            num_workers=cfg.num_workers, pin_memory=run.device.type == "cuda",
                            persistent_workers=False)
        return ((views, idx) for views, _, idx in loader)
    step = data.local_batch
    return ((None, torch.as_tensor(order[i:i + step])) for i in range(0, len(order) - step + 1, step))


def batch_views(run: Run, views: torch.Tensor | None, idx: torch.Tensor, epoch: int, step: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's views (B, V, C, H, W) and labels (B,) on the device."""
    device = run.device
    labels = run.data.labels[idx].to(device, non_blocking=True)
    if views is None:
        raw = batch_to_device(run.data.staged, idx, device)
        # BatchAugment draws its parameters on the CPU: a CPU generator needs no seed read from the device
        gen = torch.Generator().manual_seed(seed_for(run.cfg.seed, epoch, step))
        with torch.no_grad():
            views = torch.stack(run.data.batch_augment(raw, generator=gen), dim=1)  # (B, V, C, H, W)
    else:
        views = views.to(device, non_blocking=True)
        if views.ndim == 4:
            views = views.unsqueeze(1)  # (B, 1, C, H, W)
    return views, labels


def train_one_epoch(run: Run, state: TrainState, epoch: int, log: MetricsLog, bar: ProgressLine) -> bool:
    """Train ``epoch`` from ``state.step_in_epoch`` on; returns whether the run stops (``--max-steps`` or
    ``--time-budget-s`` reached)."""
    cfg, guard = run.cfg, run.guard
    run.train_model.train()
    batches = epoch_batches(run, epoch, state.step_in_epoch)
    state.epoch_started = time.perf_counter()
    for views, idx in batches:
        t0 = time.perf_counter()
        # the first step sets up (cuDNN, caches); a run that stops on an exception leaves the check too
        with sync_guard(cfg.sync_debug and state.steps_this_run > 0):
            views, labels = batch_views(run, views, idx, epoch, state.global_step)
            guard.before_forward()
            loss = train_step(run.train_model, run.objective, views, labels, cfg, run.device, run.channels_last,
                               run.scaler)
            finite = guard.step(loss, state.global_step, epoch)  # the optimiser step, or its undoing
            state.add_loss(loss, finite, guard.skip)
            run.optimizer.zero_grad(set_to_none=True)
            run.scheduler.step()
            state.global_step += 1
            state.step_in_epoch += 1
        _count_time(run, state, time.perf_counter() - t0, views.shape[0] * run.world)
        if state.global_step % cfg.log_every == 0 or state.step_in_epoch == run.data.steps_per_epoch:
            log_step(run, state, epoch, loss, finite, log, bar)
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
    return False


def _count_time(run: Run, state: TrainState, step_time: float, images: int) -> None:
    state.images_seen += images
    state.train_time += step_time
    run.schedule.train_time = state.train_time  # read by --schedule time
    state.steps_this_run += 1
    if state.steps_this_run > 5:
        state.steady_time += step_time
        state.steady_images += images


def log_step(run: Run, state: TrainState, epoch: int, loss: torch.Tensor, finite: torch.Tensor, log: MetricsLog,
             bar: ProgressLine) -> None:
    """A ``step`` row of metrics.jsonl and the progress line (reads the loss back: a sync on GPUs)."""
    run.guard.check(epoch)
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
    state.reset_epoch_loss(run.device)
    if run.data.monitor is not None and monitor_due(cfg, epoch, finished, stopping):
        row["knn_top1"] = knn_monitor(unwrap(run.model).encoder, run.data.monitor, cfg, run.device)
        bar.show(knn=f"{row['knn_top1']:.3f}")
    state.history.append(row)
    log.write(row, state.global_step)
    if finished:
        save(run, state, epoch + 1, 0)
        state.step_in_epoch = 0
    else:
        save(run, state, epoch, state.step_in_epoch)
    return row


def save(run: Run, state: TrainState, epoch: int, step_in_epoch: int) -> None:
    """Checkpoint the run at (``epoch``, ``step_in_epoch``) on rank 0; a pending non-finite step raises instead,
    so that no checkpoint holds one."""
    run.guard.check(epoch)
    if run.is_main:
        save_checkpoint(checkpoint_state(run, state, epoch, step_in_epoch), run.checkpoint)


def summarize(run: Run, state: TrainState) -> dict[str, Any]:
    """The run's summary, written to ``OUT/summary.json`` by rank 0."""
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
        "grad_scale": run.scaler.get_scale() if run.scaler is not None else None,
        "malloc": malloc_state(),
    }
    if run.is_main:
        (run.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _count_bad_files(log: Path) -> int:
    return len({line for line in log.read_text().splitlines() if line}) if log.is_file() else 0


def train_step(model: nn.Module, objective: nn.Module, views: torch.Tensor, labels: torch.Tensor, cfg: PretrainConfig,
               device: torch.device, channels_last: bool, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """Forward and backward of one batch (of the loss times the fp16 loss scale); returns the detached loss.

    Shape:
        views (N, V, C, H, W), labels (N,).
    """
    n, v = views.shape[:2]
    if cfg.micro_batch_size and cfg.micro_batch_size < n:
        from ..gradcache import cached_backward

        return cached_backward(model, objective, views, labels, cfg.micro_batch_size,
                               autocast=lambda: autocast(device, cfg.precision),
                               channels_last=channels_last, scale=None if scaler is None else scaler.scale)
    x = views.transpose(0, 1).reshape(v * n, *views.shape[2:])  # (V*N, C, H, W), view-major
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, cfg.precision):
        _, out = model(x)  # (V*N, D)
    out = upcast(out).view(v, n, -1).transpose(0, 1)  # (N, V, D)
    loss = objective(out, labels)
    (loss if scaler is None else scaler.scale(loss)).backward()
    return loss.detach()


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
