"""The pretraining loop: SimCLR, SupCon and the cross-entropy baseline.

``pretrain(cfg)`` runs a whole job: validate options, load data, build model,
loss and optimiser, resume if asked, train with a kNN monitor, checkpoint
every epoch. It runs as one process or under ``torchrun`` (DistributedDataParallel,
one process per device); only rank 0 writes files and shows progress.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .. import distributed as ckdist
from ..allocator import malloc_state, tune_malloc_for
from ..config import PretrainConfig
from ..data import ArrayDataset, EvalDataset, ViewDataset, decode_to_array, seed_for, stage_images, batch_to_device
from .checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .objective import build_objective
from .optim import build_optimizer, scaled_lr, warmup_cosine
from .rollback import Rollback
from .setup import (build_batch_augment, build_run_model, build_view_transform, check_output_dir,
                    labels_for_training, load_splits, resolve_augment_on, resolve_device, resolve_preset,
                    validate_config)

__all__ = ["pretrain", "NonFiniteError", "unwrap"]


class NonFiniteError(RuntimeError):
    """The loss or a gradient became NaN/inf."""


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs of autocast are upcast to float32 for the loss; float64 stays."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _init_distributed(device: torch.device) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return ckdist.get_rank(), ckdist.get_world_size()


class _Skip(torch.utils.data.Sampler):
    """Yields a base sampler's indices from position ``start`` on (mid-epoch resume)."""

    def __init__(self, base: DistributedSampler, start: int) -> None:
        self.base, self.start = base, start

    def __iter__(self):
        return iter(list(self.base)[self.start:])

    def __len__(self) -> int:
        return max(0, len(self.base) - self.start)


class _MetricsLog:
    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.file = open(out / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except Exception:  # tensorboard missing: metrics.jsonl still holds everything
                self.tb = None

    def write(self, row: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            prefix = "epoch" if row.get("kind") == "epoch" else "train"
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def resolve_precision(device: torch.device, precision: str) -> str:
    """What ``--precision auto`` means on ``device``: bf16 autocast on GPUs that have it (Ampere and later), fp16
    with loss scaling on older GPUs (V100, T4), fp32 elsewhere."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (its small gradients underflow to zero without one), None for fp32 and bf16."""
    if resolve_precision(device, precision) != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def _autocast(device: torch.device, precision: str):
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _eval_arrays(splits, size: int, cfg: PretrainConfig, rank: int):
    """Train (memory) and test images decoded once, at the training crop size."""
    key = None if cfg.data == "digits" else f"{os.path.abspath(os.path.expanduser(cfg.data))}"
    train = decode_to_array(splits.train, size, num_workers=cfg.num_workers,
                            cache_key=key and key + "/train")
    test = decode_to_array(splits.test, size, num_workers=cfg.num_workers, cache_key=key and key + "/test")
    return train, test


def knn_monitor(encoder: nn.Module, train_arrays, test_arrays, mean, std, cfg: PretrainConfig,
                device: torch.device) -> float:
    """kNN top-1 on the test split with the training split as memory (cosine, k, weighted votes)."""
    from ..evaluate import extract_features, knn_accuracy

    with _autocast(device, cfg.precision):
        ftr, ltr = extract_features(encoder, EvalDataset(*train_arrays, mean=mean, std=std), batch_size=512,
                                    device=device)
        fte, lte = extract_features(encoder, EvalDataset(*test_arrays, mean=mean, std=std), batch_size=512,
                                    device=device)
    return float(knn_accuracy(ftr.float(), ltr, fte.float(), lte, k=cfg.knn_k,
                              temperature=cfg.knn_temperature)["top1"])


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run pretraining as configured; returns a summary (also written to ``OUT/summary.json``).

    Raises:
        ValueError: bad options or data, before any training.
        CheckpointError: ``resume`` with a missing/corrupt checkpoint or one from another model.
        NonFiniteError: a NaN/inf loss or gradient with ``on_nonfinite="stop"``.
    """
    validate_config(cfg)
    device = resolve_device(cfg.device)
    if cfg.sync_debug and device.type != "cuda":
        raise ValueError(f"--sync-debug checks CUDA synchronisations (torch.cuda.set_sync_debug_mode); the run's "
                         f"device is {device}")
    rank, world = _init_distributed(device)
    is_main = rank == 0
    out = Path(cfg.out).expanduser()
    if is_main:
        check_output_dir(out)
    ckpt_path = out / "last.pt"
    resume_state = None
    if cfg.resume:
        resume_state = load_checkpoint(ckpt_path)  # raises, naming the file, if missing or corrupt
        _check_compatible(resume_state["config"], cfg, ckpt_path)

    splits = load_splits(cfg)
    bad_log = out / "bad_files.txt"
    if cfg.skip_bad_files:  # DataLoader workers append what they skip here: their own lists die with them
        if is_main and resume_state is None:
            bad_log.write_text("")
        for part in (splits.train, splits.test):
            if hasattr(part, "bad_files_log"):
                part.bad_files_log = str(bad_log)
    n_train = len(splits.train)
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {world} processes")
    if cfg.batch_size > n_train:
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the training set ({n_train} images)")
    local_bs = cfg.batch_size // world
    if cfg.micro_batch_size and local_bs % cfg.micro_batch_size:
        raise ValueError(f"--micro-batch-size {cfg.micro_batch_size} must divide the per-process batch {local_bs}")
    if cfg.method in ("supcon", "ce") and not splits.labelled:
        raise ValueError(f"--method {cfg.method} needs labelled data; {cfg.data} has no class folders")
    targets = list(getattr(splits.train, "targets", []))
    train_labels = labels_for_training(cfg, targets, splits.num_classes)

    spec = resolve_preset(cfg, splits)
    from ..augment import PRESETS

    mean, std = PRESETS[spec.preset].get("normalize") or ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    n_views = cfg.n_views if cfg.method != "ce" else 1

    tune_malloc_for(device, cfg.malloc)
    torch.manual_seed(cfg.seed)
    model = build_run_model(cfg, splits.num_classes, spec.size).to(device)
    channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type in ("cuda", "cpu"))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sync_bn:
        if world > 1 and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif is_main:
            print("note: --sync-bn needs torchrun with CUDA devices (torch runs SyncBatchNorm on GPUs only); "
                  "using per-process BatchNorm")
    objective = build_objective(cfg).to(device)

    steps_per_epoch = n_train // cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    peak_lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling)
    optimizer = build_optimizer(model, cfg.optimizer, peak_lr, cfg.momentum, cfg.weight_decay)
    clock = {"train_time": 0.0}  # read by the time-based schedule

    def lr_factor(step: int) -> float:
        if cfg.schedule == "time":  # progress measured in training seconds, on a 10,000-tick grid
            ticks = int(10_000 * min(1.0, clock["train_time"] / cfg.time_budget_s))
            return warmup_cosine(ticks, 10_000, int(10_000 * cfg.warmup_epochs / cfg.epochs), cfg.min_lr_ratio)
        return warmup_cosine(step, total_steps, warmup_steps, cfg.min_lr_ratio)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    scaler = grad_scaler(device, cfg.precision)

    start_epoch, start_step, global_step = 0, 0, 0
    history: list[dict] = []
    if resume_state is not None:
        try:
            model.load_state_dict(resume_state["model"], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {ckpt_path} does not match the model: {exc}") from exc
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        start_epoch, start_step = int(resume_state["epoch"]), int(resume_state["step_in_epoch"])
        global_step = int(resume_state["global_step"])
        history = list(resume_state.get("history", []))
        set_rng_state(resume_state["rng"])
    if start_step >= steps_per_epoch:
        start_epoch, start_step = start_epoch + 1, 0

    train_model: nn.Module = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    # Data: per-image transforms in workers, or decoded arrays augmented on the device.
    arrays = None
    augment_on = resolve_augment_on(cfg.augment_on, splits)
    if augment_on == "device":
        images, _ = decode_to_array(splits.train, splits.image_size or spec.size, num_workers=cfg.num_workers,
                                    cache_key=None if cfg.data == "digits" else
                                    os.path.abspath(os.path.expanduser(cfg.data)) + "/train-native",
                                    progress=cfg.progress and is_main)  # once per data set, then cached
        arrays = ArrayDataset(images, train_labels)
        staged = stage_images(images, device)  # on a GPU: the whole array there when it fits
        batch_augment = build_batch_augment(spec, n_views).to(device)
        train_ds = arrays
    else:
        train_ds = ViewDataset(splits.train, build_view_transform(spec, n_views), seed=cfg.seed)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)

    monitor = cfg.knn_every > 0 and splits.labelled and splits.test is not None
    eval_arrays = _eval_arrays(splits, spec.size, cfg, rank) if monitor and is_main else None

    log = _MetricsLog(out, is_main)
    if is_main:
        cfg.save_yaml(out / "config.yaml")
        if resume_state is None and (out / "metrics.jsonl").stat().st_size > 0:
            (out / "metrics.jsonl").write_text("")  # a fresh run replaces the old log
    skipped = torch.zeros((), dtype=torch.long, device=device)  # steps undone by --on-nonfinite skip
    skip_mode = cfg.on_nonfinite == "skip"
    # fp16 with an optimiser that cannot take the loss scaler's overflow flag on the device (LARS; fused SGD can):
    # scaler.step would read the flag back, so the step is taken and undone on the device where it overflowed
    undo_overflow = scaler is not None and not getattr(optimizer, "_step_supports_amp_scaling", False)
    rollback = Rollback(model, optimizer) if skip_mode or undo_overflow else None
    train_time = 0.0
    images_seen = 0
    steady_time, steady_images, steps_this_run = 0.0, 0, 0  # throughput after the first 5 steps of this process
    stop_reason = "completed"
    first_bad = torch.tensor(-1, device=device)
    bar = None
    if is_main and cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=global_step, desc=f"{cfg.method}", dynamic_ncols=True)

    def make_checkpoint(epoch: int, step_in_epoch: int) -> None:
        if int(first_bad) >= 0:  # GPU: a non-finite step not yet reported must never reach a checkpoint
            _raise_nonfinite(loss, gnorm, int(first_bad), epoch, ckpt_path, log, bar)
        if not is_main:
            return
        save_checkpoint({
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": global_step,
            "config": cfg.to_dict(),
            "rng": rng_state(),
            "history": history,
            "epoch_loss": {"sum": loss_sum.detach().cpu().clone(), "count": int(loss_count)},  # mid-epoch resume
            "meta": {"encoder": cfg.encoder, "feature_dim": model.encoder.feature_dim, "image_size": spec.size,
                     "preset": spec.preset, "mean": list(mean), "std": list(std), "classes": splits.classes,
                     "data": cfg.data, "method": cfg.method},
        }, ckpt_path)

    params = [p for p in model.parameters() if p.requires_grad]
    t_last_log, img_last_log = time.perf_counter(), 0
    # the epoch's loss: sum and count of the finite steps, both on the device (read at the epoch's end)
    loss_sum, loss_count = torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)
    if resume_state is not None and "epoch_loss" in resume_state:  # the resumed epoch's mean covers all its steps
        loss_sum = resume_state["epoch_loss"]["sum"].to(device)
        loss_count += int(resume_state["epoch_loss"]["count"])
    done = False
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        skip = start_step * local_bs if epoch == start_epoch else 0
        ep_sampler = _Skip(sampler, skip)
        step_in_epoch = start_step if epoch == start_epoch else 0
        train_model.train()
        if arrays is None:
            train_ds.set_epoch(epoch)
            loader = DataLoader(train_ds, batch_size=local_bs, sampler=ep_sampler, drop_last=True,
                                num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                                persistent_workers=False)
            batches = ((v, idx) for v, _, idx in loader)
        else:
            order = list(ep_sampler)
            batches = ((None, torch.as_tensor(order[i:i + local_bs]))
                       for i in range(0, len(order) - local_bs + 1, local_bs))
        epoch_t0 = time.perf_counter()
        for views, idx in batches:
            t0 = time.perf_counter()
            # the first step sets up (cuDNN, caches); a run that stops on an exception leaves the check too
            with _sync_guard(cfg.sync_debug and steps_this_run > 0):
                labels = train_labels[idx].to(device, non_blocking=True)
                if views is None:
                    raw = batch_to_device(staged, idx, device)
                    # BatchAugment draws its parameters on the CPU: a CPU generator needs no seed read from the device
                    gen = torch.Generator().manual_seed(seed_for(cfg.seed, epoch, global_step))
                    with torch.no_grad():
                        views = torch.stack(batch_augment(raw, generator=gen), dim=1)  # (B, V, C, H, W)
                else:
                    views = views.to(device, non_blocking=True)
                    if views.ndim == 4:
                        views = views.unsqueeze(1)  # (B, 1, C, H, W)
                if rollback is not None:  # before the forward pass, which updates BatchNorm's running statistics
                    rollback.save()
                loss = _train_step(train_model, objective, views, labels, cfg, device, channels_last, scaler)
                if scaler is not None:
                    scaler.unscale_(optimizer)  # true gradients for the norm; notes an overflow for scaler.step
                gnorm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
                # every rank takes (or skips, or stops at) the same steps: a NaN loss on one rank alone can come with
                # finite gradients (the objective zeroes non-finite embeddings), so the flag itself is all-reduced.
                # fp16: an overflowing gradient is the loss scaler's (it skips that step and lowers the scale); the
                # guard watches the loss.
                finite = torch.isfinite(loss) if scaler is not None else torch.isfinite(loss) & torch.isfinite(gnorm)
                finite = ckdist.all_true(finite)
                if not skip_mode and device.type == "cpu":  # reading is free on a CPU: stop at once
                    if not bool(finite):
                        _raise_nonfinite(loss, gnorm, global_step, epoch, ckpt_path, log, bar)
                elif not skip_mode:
                    first_bad = first_nonfinite(first_bad, finite, global_step)
                if scaler is not None and not undo_overflow:
                    scaler.step(optimizer)  # fused SGD skips an overflowing step on the device
                else:
                    optimizer.step()
                if scaler is not None:
                    scaler.update()  # from the overflow flag unscale_ recorded, on the device
                undo = ~finite if skip_mode else None  # skip: undone where not finite, nothing read back
                if undo_overflow:  # unscaled gradients are non-finite exactly where the scaler found an overflow
                    overflow = ~torch.isfinite(gnorm)
                    undo = overflow if undo is None else undo | overflow
                if undo is not None:
                    rollback.undo_where(undo)
                if skip_mode:
                    skipped += ~finite
                    loss_sum += torch.where(finite, loss, 0.0)
                    loss_count += finite
                else:
                    loss_sum += loss
                    loss_count += 1
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                global_step += 1
                step_in_epoch += 1
            images_seen += views.shape[0] * world
            step_time = time.perf_counter() - t0
            train_time += step_time
            clock["train_time"] = train_time
            steps_this_run += 1
            if steps_this_run > 5:
                steady_time += step_time
                steady_images += views.shape[0] * world
            if global_step % cfg.log_every == 0 or step_in_epoch == steps_per_epoch:
                if int(first_bad) >= 0:
                    _raise_nonfinite(loss, gnorm, int(first_bad), epoch, ckpt_path, log, bar)
                if not skip_mode or bool(finite):  # a skipped step logs no loss
                    now = time.perf_counter()
                    ips = (images_seen - img_last_log) / max(now - t_last_log, 1e-9)
                    t_last_log, img_last_log = now, images_seen
                    row = {"kind": "step", "step": global_step, "epoch": epoch, "loss": float(loss),
                           "lr": optimizer.param_groups[0]["lr"], "images_per_s": ips}
                    log.write(row, global_step)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.3g}", img_s=f"{ips:.0f}")
            if bar is not None:
                bar.update(1)
            if cfg.checkpoint_every_steps and global_step % cfg.checkpoint_every_steps == 0 \
                    and step_in_epoch < steps_per_epoch:
                make_checkpoint(epoch, step_in_epoch)
            if (cfg.max_steps and global_step >= cfg.max_steps) or \
                    (cfg.time_budget_s and train_time >= cfg.time_budget_s):
                stop_reason = "max_steps" if cfg.max_steps and global_step >= cfg.max_steps else "time_budget"
                done = True
                break
        start_step = 0
        finished_epoch = step_in_epoch >= steps_per_epoch
        count = int(loss_count)
        row = {"kind": "epoch", "epoch": epoch, "step": global_step,
               "loss": float(loss_sum / count) if count else float("nan"),
               "epoch_time_s": time.perf_counter() - epoch_t0, "train_time_s": train_time}
        loss_sum.zero_()
        loss_count.zero_()
        if monitor and (finished_epoch or done) and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.epochs
                                                     or done):
            if is_main:
                row["knn_top1"] = knn_monitor(unwrap(model).encoder, eval_arrays[0], eval_arrays[1], mean, std,
                                              cfg, device)
            if world > 1:
                dist.barrier()
        history.append(row)
        log.write(row, global_step)
        if finished_epoch:
            make_checkpoint(epoch + 1, 0)
        else:
            make_checkpoint(epoch, step_in_epoch)
        if done:
            break
    if bar is not None:
        bar.close()
    log.close()
    summary = {
        "out": str(out), "checkpoint": str(ckpt_path), "method": cfg.method, "data": cfg.data,
        "epochs": cfg.epochs, "global_step": global_step, "stop_reason": stop_reason,
        "train_time_s": round(train_time, 2), "images_per_s": round(images_seen / max(train_time, 1e-9), 1),
        "images_per_s_steady": round(steady_images / steady_time, 1) if steady_time else None,
        "final_loss": history[-1]["loss"] if history else None,
        "knn_top1": next((r["knn_top1"] for r in reversed(history) if "knn_top1" in r), None),
        "skipped_nonfinite_steps": int(skipped),
        "skipped_bad_files": _count_bad_files(bad_log) if cfg.skip_bad_files else 0,
        "world_size": world,
        "rank": rank,
        "precision": resolve_precision(device, cfg.precision),
        "channels_last": channels_last,
        "compiled": bool(cfg.compile),
        "augment_on": augment_on,
        "grad_scale": scaler.get_scale() if scaler is not None else None,
        "malloc": malloc_state(),
    }
    if is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _count_bad_files(log: Path) -> int:
    return len({line for line in log.read_text().splitlines() if line}) if log.is_file() else 0


def _train_step(model, objective, views, labels, cfg, device, channels_last, scaler=None) -> torch.Tensor:
    """Forward and backward of one batch (of the loss times the fp16 loss scale); returns the detached loss."""
    n, v = views.shape[:2]
    if cfg.micro_batch_size and cfg.micro_batch_size < n:
        from ..gradcache import cached_backward

        return cached_backward(model, objective, views, labels, cfg.micro_batch_size,
                               autocast=lambda: _autocast(device, cfg.precision),
                               channels_last=channels_last, scale=None if scaler is None else scaler.scale)
    x = views.transpose(0, 1).reshape(v * n, *views.shape[2:])  # (V*N, C, H, W), view-major
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with _autocast(device, cfg.precision):
        _, out = model(x)  # (V*N, D)
    out = _upcast(out).view(v, n, -1).transpose(0, 1)  # (N, V, D)
    loss = objective(out, labels)
    (loss if scaler is None else scaler.scale(loss)).backward()
    return loss.detach()


@contextlib.contextmanager
def _sync_guard(enabled: bool):
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


def first_nonfinite(first_bad: torch.Tensor, finite: torch.Tensor, step: int) -> torch.Tensor:
    """The first non-finite step so far, kept on the device (-1: none yet).

    ``step`` enters as a scalar argument of the kernel: ``torch.tensor(step, device=...)`` would be a blocking
    host-to-device copy, which waits for every queued kernel (a host synchronisation per step on GPUs).
    """
    return torch.where(~finite & (first_bad < 0), step, first_bad)


def _raise_nonfinite(loss, gnorm, step, epoch, ckpt_path, log, bar):
    if bar is not None:
        bar.close()
    log.close()
    where = f"the last checkpoint is {ckpt_path}" if ckpt_path.exists() else "no checkpoint was written yet"
    raise NonFiniteError(
        f"non-finite loss or gradient at step {step} (epoch {epoch}): loss={float(loss)}, grad norm={float(gnorm)}; "
        f"{where}. Lower --lr, check the data, or pass --on-nonfinite skip to skip such steps.")


_ARCH_KEYS = ("method", "encoder", "width", "head", "proj_dim", "proj_hidden_dim", "cifar_stem", "data", "n_views",
              "batch_size", "epochs", "seed")


def _check_compatible(saved: dict, cfg: PretrainConfig, path: Path) -> None:
    """A resumed run must be the same run: same model, data, batch, schedule length and seed."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {getattr(cfg, k)!r}" for k in _ARCH_KEYS
             if saved.get(k) != getattr(cfg, k)]
    if diffs:
        raise CheckpointError(f"--resume: checkpoint {path} was written by a different run ({'; '.join(diffs)}); "
                              f"use another --out or the same options")
