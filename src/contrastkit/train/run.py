"""Building a pretraining run from its config: the process group, the data, the model, the objective, the
optimiser and its schedule. Each step is a function of its own; :func:`build_run` calls them in order and
returns a :class:`Run`, which :func:`~contrastkit.train.trainer.pretrain` trains.

Everything that can fail on the user's options or data fails here, before ``OUT`` is written to.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from .. import distributed as ckdist
from ..allocator import tune_malloc_for
from ..augment import ResolutionSchedule, parse_size_schedule
from ..config import PretrainConfig
from ..data import ArrayDataset, DataSplits, ViewDataset, array_cache_key, decode_to_array, stage_images
from ..model import ContrastiveModel
from .memory_format import use_channels_last
from .monitor import MonitorData, monitor_data
from .nonfinite import NonFiniteGuard
from .objective import build_objective
from .optim import build_optimizer, scaled_lr, warmup_cosine
from .precision import grad_scaler
from .rundir import clear_run_outputs
from .setup import (AugmentSpec, build_batch_augment, build_run_model, build_view_transform, check_output_dir,
                    labels_for_training, load_splits, resolve_augment_on, resolve_preset)

__all__ = ["Run", "TrainData", "LRSchedule", "build_run", "init_distributed", "check_data", "build_data",
           "build_model", "build_optimisation", "wrap_model", "unwrap"]


@dataclass
class TrainData:
    """The training data of a run and how a batch is made from them.

    ``augment_on == "device"``: ``staged`` holds the decoded images (on the device when they fit) and
    ``batch_augment`` makes the views there; ``"workers"``: ``dataset`` is a ViewDataset whose DataLoader workers
    make the views. ``sampler`` splits the indices between ranks.
    """

    splits: DataSplits
    spec: AugmentSpec
    mean: tuple
    std: tuple
    n_views: int
    local_batch: int
    steps_per_epoch: int
    labels: torch.Tensor
    augment_on: str
    dataset: Dataset
    sampler: DistributedSampler
    staged: torch.Tensor | None = None
    batch_augment: nn.Module | None = None
    resolution: ResolutionSchedule | None = None
    monitor: MonitorData | None = None
    bad_files_log: Path | None = None


class LRSchedule:
    """The learning-rate factor of step ``step``: linear warm-up, then cosine decay (:func:`warmup_cosine`).

    With ``--schedule time`` progress is measured in training seconds (``train_time``, which the loop sets) on a
    10,000-tick grid instead of steps.
    """

    def __init__(self, cfg: PretrainConfig, steps_per_epoch: int) -> None:
        self.cfg = cfg
        self.total_steps = cfg.epochs * steps_per_epoch
        self.warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
        self.train_time = 0.0

    def __call__(self, step: int) -> float:
        cfg = self.cfg
        if cfg.schedule == "time":
            ticks = int(10_000 * self.progress(step))
            return warmup_cosine(ticks, 10_000, int(10_000 * cfg.warmup_epochs / cfg.epochs), cfg.min_lr_ratio)
        return warmup_cosine(step, self.total_steps, self.warmup_steps, cfg.min_lr_ratio)

    def progress(self, step: int) -> float:
        """How far the schedule is at ``step``, in [0, 1]: training seconds over ``--time-budget-s`` (``--schedule
        time``) or steps over those of ``--epochs``; the resolution schedule follows it too."""
        if self.cfg.schedule == "time":
            return min(1.0, self.train_time / self.cfg.time_budget_s)
        return min(1.0, step / max(1, self.total_steps))


@dataclass
class Run:
    """Everything a run trains with. ``model`` is the plain model (checkpointed); ``train_model`` wraps it
    (DistributedDataParallel, torch.compile) for the forward pass."""

    cfg: PretrainConfig
    device: torch.device
    rank: int
    world: int
    out: Path
    data: TrainData
    model: ContrastiveModel
    train_model: nn.Module
    channels_last: bool
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    guard: NonFiniteGuard

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoint(self) -> Path:
        return self.out / "last.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def init_distributed(device: torch.device, timeout_s: float) -> tuple[int, int]:
    """Join the process group under torchrun (``WORLD_SIZE`` > 1); returns (rank, world size), (0, 1) alone.

    ``timeout_s`` bounds how long a collective waits for the slowest rank (``--dist-timeout-s``).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return ckdist.get_rank(), ckdist.get_world_size()


def check_data(cfg: PretrainConfig, splits: DataSplits, world: int) -> None:
    """The options that depend on the data and the number of processes.

    Raises:
        ValueError: a batch that does not split over the processes or is larger than the data, or a labelled
            method on unlabelled data.
    """
    n_train = len(splits.train)
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} must be divisible by the {world} processes")
    if cfg.batch_size > n_train:
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the training set ({n_train} images)")
    local = cfg.batch_size // world
    if cfg.micro_batch_size and local % cfg.micro_batch_size:
        raise ValueError(f"--micro-batch-size {cfg.micro_batch_size} must divide the per-process batch {local}")
    if cfg.method in ("supcon", "ce") and not splits.labelled:
        raise ValueError(f"--method {cfg.method} needs labelled data; {cfg.data} has no class folders")


def build_data(cfg: PretrainConfig, splits: DataSplits, device: torch.device, rank: int, world: int,
               bad_files_log: Path | None = None) -> TrainData:
    """The training data (decoded and staged for ``--augment-on device``), the sampler and the monitor's arrays.

    Every rank decodes what it needs here, before the model is wrapped for DistributedDataParallel.
    """
    from ..augment import PRESETS

    if bad_files_log is not None:  # DataLoader workers append what they skip here: their own lists die with them
        for part in (splits.train, splits.test):
            if hasattr(part, "bad_files_log"):
                part.bad_files_log = str(bad_files_log)
    labels = labels_for_training(cfg, list(getattr(splits.train, "targets", [])), splits.num_classes)
    spec = resolve_preset(cfg, splits)
    mean, std = PRESETS[spec.preset].get("normalize") or ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    n_views = cfg.n_views if cfg.method != "ce" else 1
    augment_on = resolve_augment_on(cfg.augment_on, splits)
    staged = batch_augment = None
    resolution = parse_size_schedule(cfg.size_schedule, spec.size)
    if resolution is not None and augment_on != "device":
        raise ValueError(f"--size-schedule {cfg.size_schedule!r} needs the batched augmentation, but these data "
                         f"take --augment-on workers (images of mixed sizes, or too many to decode into memory)")
    if augment_on == "device":
        images, _ = decode_to_array(splits.train, splits.image_size or spec.size, num_workers=cfg.num_workers,
                                    cache_key=array_cache_key(cfg.data, "train-native"),
                                    progress=cfg.progress and rank == 0)  # once per data set, then cached
        dataset: Dataset = ArrayDataset(images, labels)
        staged = stage_images(images, device)  # on a GPU: the whole array there when it fits
        batch_augment = build_batch_augment(spec, n_views).to(device)
    else:
        dataset = ViewDataset(splits.train, build_view_transform(spec, n_views), seed=cfg.seed)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    return TrainData(splits=splits, spec=spec, mean=mean, std=std, n_views=n_views, local_batch=cfg.batch_size // world,
                     steps_per_epoch=len(splits.train) // cfg.batch_size, labels=labels, augment_on=augment_on,
                     dataset=dataset, sampler=sampler, staged=staged, batch_augment=batch_augment,
                     resolution=resolution, monitor=monitor_data(cfg, splits, spec.size, mean, std),
                     bad_files_log=bad_files_log)


def build_model(cfg: PretrainConfig, data: TrainData, device: torch.device, world: int,
                is_main: bool = True) -> tuple[ContrastiveModel, bool]:
    """The model on ``device`` (seeded with ``cfg.seed``), in channels_last when that is on; returns it and
    whether channels_last is on."""
    tune_malloc_for(device, cfg.malloc)
    torch.manual_seed(cfg.seed)
    model = build_run_model(cfg, data.splits.num_classes, data.spec.size).to(device)
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


def build_optimisation(cfg: PretrainConfig, model: nn.Module, steps_per_epoch: int, device: torch.device
                       ) -> tuple[torch.optim.Optimizer, LRSchedule, torch.optim.lr_scheduler.LambdaLR,
                                  torch.amp.GradScaler | None]:
    """The optimiser at the scaled peak learning rate, its warm-up + cosine schedule, and the fp16 loss scaler."""
    peak_lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling)
    optimizer = build_optimizer(model, cfg.optimizer, peak_lr, cfg.momentum, cfg.weight_decay)
    schedule = LRSchedule(cfg, steps_per_epoch)
    # a plain function: LambdaLR would store a callable object's attributes (the config) in its state dict
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step))
    return optimizer, schedule, scheduler, grad_scaler(device, cfg.precision)


def wrap_model(model: nn.Module, cfg: PretrainConfig, device: torch.device, world: int) -> nn.Module:
    """The model for the forward pass: DistributedDataParallel under torchrun, then torch.compile if asked."""
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    return train_model


def _prepare_out(out: Path, rank: int, fresh: bool, clear: bool = False) -> Path:
    """Create ``out`` on rank 0, checked writable with room for checkpoints; returns its ``bad_files.txt`` (emptied
    for a fresh run). ``clear`` (``--overwrite``): first delete the outputs of the run ``out`` holds."""
    bad_files_log = out / "bad_files.txt"
    if rank == 0:
        if clear:
            clear_run_outputs(out)
        check_output_dir(out)
        if fresh:
            bad_files_log.write_text("")
    return bad_files_log


def build_run(cfg: PretrainConfig, device: torch.device, rank: int, world: int, fresh: bool = True) -> Run:
    """Every step above, in order: data, model, objective (all before ``OUT`` is created, unless
    ``--skip-bad-files`` needs it for its list), optimisation.

    Args:
        cfg: a validated config.
        device, rank, world: from :func:`~contrastkit.device.resolve_device` and :func:`init_distributed`.
        fresh: not a resume (the bad-files list then starts empty).
    """
    out = Path(cfg.out).expanduser()
    splits = load_splits(cfg)
    check_data(cfg, splits, world)
    bad_files_log = None
    if cfg.skip_bad_files:  # the loader workers write the list of skipped files into OUT while decoding
        bad_files_log = _prepare_out(out, rank, fresh, cfg.overwrite)
    data = build_data(cfg, splits, device, rank, world, bad_files_log)
    model, channels_last = build_model(cfg, data, device, world, rank == 0)
    objective = build_objective(cfg).to(device)
    if not cfg.skip_bad_files:  # a failed start (unreadable image, unknown timm model) leaves no OUT behind
        _prepare_out(out, rank, fresh, cfg.overwrite)
    optimizer, schedule, scheduler, scaler = build_optimisation(cfg, model, data.steps_per_epoch, device)
    guard = NonFiniteGuard(cfg.on_nonfinite, model, optimizer, scaler, device, out / "last.pt")
    return Run(cfg=cfg, device=device, rank=rank, world=world, out=out, data=data, model=model,
               train_model=model, channels_last=channels_last, objective=objective, optimizer=optimizer,
               schedule=schedule, scheduler=scheduler, scaler=scaler, guard=guard)

