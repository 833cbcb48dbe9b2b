"""Building a pretraining run from its options: the process group, the data, the method's model, objective and
labels, the optimiser, its schedule and the loss scaler. :func:`build_run` does each step in order and returns a
:class:`Run`, which :func:`~contrastkit.train.trainer.pretrain` trains.

Everything that can fail on the user's options or data fails here, before ``OUT`` is written to (but for the list
of unreadable files that ``--skip-bad-files`` keeps there).
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..config import PretrainConfig
from ..data import DataSplits
from ..methods import Method, MethodParts, get_method
from ..runtime import distributed as ckdist
from ..runtime import tune_malloc_for
from ..runtime.files import check_output_dir
from .data import TrainData, build_data, check_data, data_info, load_splits, resolve_preset
from .memory_format import use_channels_last
from .nonfinite import NonFiniteGuard
from .optim import WarmupCosine, build_optimizer, scaled_lr
from .precision import autocast, grad_scaler
from .run_folder import RunFolder
from .signals import StopSignals

__all__ = ["Run", "build_run", "fit_to_data", "process_group", "unwrap"]


@dataclass
class Run:
    """Everything a run trains with. ``model`` is the plain model (checkpointed); ``train_model`` is what the
    forward pass calls: the same model, wrapped by DistributedDataParallel and torch.compile when they are on."""

    cfg: PretrainConfig
    method: Method
    parts: MethodParts
    device: torch.device
    rank: int
    world: int
    out: Path
    data: TrainData
    model: nn.Module
    train_model: nn.Module
    channels_last: bool
    autocast: Callable[[], contextlib.AbstractContextManager]
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine
    scaler: torch.amp.GradScaler
    guard: NonFiniteGuard
    folder: RunFolder | None = None  # rank 0's lock and marker of OUT (None on other ranks)
    stop: StopSignals = field(default_factory=StopSignals)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoint(self) -> Path:
        return self.out / "last.pt"

    @property
    def objective(self) -> nn.Module:
        return self.parts.objective

    def meta(self) -> dict[str, Any]:
        """What the checkpoint records about the model's input and origin
        (read back as :class:`~contrastkit.models.CheckpointMeta`)."""
        data = self.data
        return {"encoder": self.cfg.encoder, "feature_dim": int(unwrap(self.model).encoder.feature_dim),
                "image_size": data.spec.size, "preset": data.spec.preset, "mean": list(data.mean),
                "std": list(data.std), "classes": data.splits.classes, "data": self.cfg.data,
                "method": self.cfg.method}


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@contextlib.contextmanager
def process_group(device: torch.device, timeout_s: float) -> Iterator[tuple[int, int]]:
    """Join the process group under torchrun (``WORLD_SIZE`` > 1) for the ``with`` block; yields (rank, world
    size), (0, 1) alone.

    A group this call creates is destroyed when the block ends, however it ends: left to the interpreter's exit,
    gloo's threads can abort the process after a finished run. A group the caller already joined is left to it.
    ``timeout_s`` bounds how long a collective waits for the slowest rank (``--dist-timeout-s``).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = world > 1 and not dist.is_initialized()
    if created:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield ckdist.get_rank(), ckdist.get_world_size()
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def _place_model(cfg: PretrainConfig, model: nn.Module, device: torch.device, world: int, is_main: bool
                 ) -> tuple[nn.Module, bool]:
    """The model on ``device``, in channels_last when that is on, with SyncBatchNorm when asked and possible;
    returns it and whether channels_last is on."""
    model = model.to(device)
    channels_last = use_channels_last(cfg.channels_last, model, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sync_bn:
        if world > 1 and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif is_main:
            print("note: --sync-bn needs torchrun with CUDA devices (torch runs SyncBatchNorm on GPUs only); "
                  "using per-process BatchNorm")
    return model, channels_last


def wrap_model(model: nn.Module, cfg: PretrainConfig, device: torch.device, world: int) -> nn.Module:
    """The model for the forward pass: DistributedDataParallel under torchrun (a process group of ``world`` > 1),
    then torch.compile if asked."""
    train_model = model
    if world > 1 and ckdist.is_distributed():
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    return train_model


def _schedule(cfg: PretrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> WarmupCosine:
    """The warm-up + cosine schedule over the run's steps, or over its time budget (``--schedule time``)."""
    budget = cfg.time_budget_s if cfg.schedule == "time" else 0.0
    return WarmupCosine(optimizer, cfg.epochs * steps_per_epoch, int(round(cfg.warmup_epochs * steps_per_epoch)),
                        cfg.min_lr_ratio, budget_s=budget, warmup_fraction=cfg.warmup_epochs / cfg.epochs)


def _start_writing(cfg: PretrainConfig, folder: RunFolder | None, rank: int, fresh: bool) -> Path:
    """Rank 0 starts writing ``OUT``: the run's files listed in its marker (an old run moved aside with
    ``--overwrite``), room for checkpoints checked, ``bad_files.txt`` emptied for a fresh run. Returns that list's
    path (on every rank)."""
    out = Path(cfg.out).expanduser()
    if folder is not None:
        folder.prepare(fresh)
    elif rank == 0:  # a run built without its folder's lock (tests of the loop): OUT is only created
        check_output_dir(out)
    if rank == 0 and fresh:
        (out / "bad_files.txt").write_text("")
    return out / "bad_files.txt"


def fit_to_data(cfg: PretrainConfig, world: int, say: bool = True) -> tuple[PretrainConfig, DataSplits]:
    """The run's data, and its options checked against them with the batch size chosen when unset
    (:func:`~contrastkit.train.data.check_data`); ``say``: print on stderr, in one line, that an unset batch size
    was lowered to fit a small training set."""
    splits = load_splits(cfg)
    cfg, note = check_data(cfg, splits, world, get_method(cfg.method).needs_labels)
    if note and say:
        print(note, file=sys.stderr)
    return cfg, splits


def build_run(cfg: PretrainConfig, device: torch.device, rank: int, world: int, fresh: bool = True,
              folder: RunFolder | None = None, splits: DataSplits | None = None) -> Run:
    """Data, the method's pieces, the model on its device, optimisation, in that order (all before ``OUT`` is
    created, unless ``--skip-bad-files`` needs it for its list).

    Args:
        cfg: checked options (:func:`contrastkit.methods.check_options`).
        device, rank, world: from :func:`~contrastkit.runtime.resolve_device` and :func:`process_group`.
        fresh: not a resume (the bad-files list then starts empty).
        folder: rank 0's hold on ``OUT`` (:class:`~contrastkit.train.run_folder.RunFolder`).
        splits: the data, when already loaded (:func:`fit_to_data`); else loaded here, and an unset batch size
            chosen to fit them.
    """
    out = Path(cfg.out).expanduser()
    method = get_method(cfg.method)
    if splits is None:
        cfg, splits = fit_to_data(cfg, world, rank == 0)
    else:
        cfg, _ = check_data(cfg, splits, world, method.needs_labels)
    bad_files_log = _start_writing(cfg, folder, rank, fresh) if cfg.skip_bad_files else None
    spec = resolve_preset(cfg, splits)
    tune_malloc_for(device, cfg.malloc)
    torch.manual_seed(cfg.seed)
    parts = method.build(cfg, data_info(cfg, splits, spec))
    data = build_data(cfg, splits, spec, parts.labels, method.n_views(cfg), device, rank, world, bad_files_log)
    model, channels_last = _place_model(cfg, parts.model, device, world, rank == 0)
    parts.model, parts.objective = model, parts.objective.to(device)
    if not cfg.skip_bad_files:  # a failed start (unreadable image, unknown timm model) leaves no OUT behind
        _start_writing(cfg, folder, rank, fresh)
    optimizer = build_optimizer(model, cfg.optimizer, scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling), cfg.momentum,
                                cfg.weight_decay)
    scaler = grad_scaler(device, cfg.precision)
    return Run(cfg=cfg, method=method, parts=parts, device=device, rank=rank, world=world, out=out, data=data,
               model=model, train_model=wrap_model(model, cfg, device, world), channels_last=channels_last,
               autocast=lambda: autocast(device, cfg.precision), optimizer=optimizer,
               scheduler=_schedule(cfg, optimizer, data.steps_per_epoch), scaler=scaler,
               guard=NonFiniteGuard(cfg.on_nonfinite, model, optimizer, scaler, device, out / "last.pt"),
               folder=folder)
