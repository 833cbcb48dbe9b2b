"""The training data of a run: the splits, the augmentation, and the batches the loop trains on.

Two ways to make a batch's views (``--augment-on``): ``device`` decodes the training images once into a uint8
array and augments whole batches on the model's device (:class:`~contrastkit.augment.BatchAugment`); ``workers``
applies per-image transforms in DataLoader workers, from the files. :meth:`TrainData.batches` hides the
difference from the loop: either way it yields the views (N, V, C, H, W) and labels (N,) on the device.

A resolution schedule (``--size-schedule``, :mod:`contrastkit.augment.resolution`) makes smaller views early in a
run: :meth:`TrainData.batches` asks the schedule's progress before each batch and has ``BatchAugment`` render the
views at the side the schedule gives for it (device augmentation only).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..augment import (PRESETS, BatchAugment, MultiViewTransform, ResolutionSchedule, SimCLRTransform,
                       parse_size_schedule, preset_for)
from ..config import PretrainConfig, fit_batch_size
from ..data import (ArrayDataset, DataSplits, ViewDataset, array_cache_key, batch_to_device, decode_to_array,
                    load_dataset, seed_for, stage_images)
from ..methods import DataInfo, check_options
from .monitor import MonitorData, monitor_data

__all__ = ["TrainData", "AugmentSpec", "load_splits", "check_data", "build_data", "resolve_preset",
           "resolve_augment_on", "auto_device_budget", "data_info"]


@dataclass
class AugmentSpec:
    """The augmentation of a run: a preset, its overrides (crop scale, colour strength, ...) and the crop size."""

    preset: str
    overrides: dict
    size: int


@dataclass
class TrainData:
    """The training data of a run and how a batch is made from them.

    ``augment_on == "device"``: ``staged`` holds the decoded images (on the device when they fit) and
    ``batch_augment`` makes the views there; ``"workers"``: ``dataset`` is a ViewDataset whose DataLoader workers
    make the views. ``sampler`` splits the indices between ranks; ``labels`` is the method's label of every image.
    ``resolution``: the view side by the run's progress (None: ``spec.size`` throughout).
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
    seed: int
    num_workers: int
    device: torch.device
    staged: torch.Tensor | None = None
    batch_augment: nn.Module | None = None
    resolution: ResolutionSchedule | None = None
    monitor: MonitorData | None = None
    bad_files_log: Path | None = None

    def batches(self, epoch: int, start_step: int, global_step: int, progress: Callable[[], float] | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of ``epoch`` from step ``start_step`` on (``global_step``: the run's step count
        then): views (N, V, C, H, W) and labels (N,) (or multi-hot label sets (N, C)), on the device.

        ``progress`` returns how far the run's schedule is, in [0, 1] (the learning-rate schedule's
        :meth:`~contrastkit.train.optim.WarmupCosine.progress`); it is read before each batch is made, and with a
        resolution schedule sets the side of that batch's views.
        """
        self.sampler.set_epoch(epoch)
        order = list(self.sampler)[start_step * self.local_batch:]
        if self.staged is None:
            self.dataset.set_epoch(epoch)
            loader = DataLoader(self.dataset, batch_size=self.local_batch, sampler=order, drop_last=True,
                                num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                                persistent_workers=False)
            for views, _, idx in loader:
                views = views.to(self.device, non_blocking=True)
                yield (views if views.ndim == 5 else views.unsqueeze(1)), self._labels(idx)  # (N, V, C, H, W)
            return
        step = self.local_batch
        for i, first in enumerate(range(0, len(order) - step + 1, step)):
            idx = torch.as_tensor(order[first:first + step])
            size = self.view_size(progress() if progress is not None else 0.0)
            yield self.augment(idx, epoch, global_step + i, size), self._labels(idx)

    def _labels(self, idx: torch.Tensor) -> torch.Tensor:
        return self.labels[idx].to(self.device, non_blocking=True)  # (N,)

    def view_size(self, progress: float) -> int:
        """The side of the views at ``progress`` (a fraction of the run): the resolution schedule's, else the
        run's crop size."""
        return self.resolution.size_at(progress) if self.resolution is not None else self.spec.size

    def augment(self, idx: torch.Tensor, epoch: int, step: int, size: int | None = None) -> torch.Tensor:
        """The views of the staged images ``idx`` at side ``size`` (None: the run's), drawn from a generator
        seeded by (seed, epoch, step): the same crops and colours at any size.

        Shape:
            idx (N,) -> views (N, V, 3, S, S).
        """
        raw = batch_to_device(self.staged, idx, self.device)
        # BatchAugment draws its parameters on the CPU: a CPU generator needs no seed read from the device
        gen = torch.Generator().manual_seed(seed_for(self.seed, epoch, step))
        with torch.no_grad():
            return torch.stack(self.batch_augment(raw, generator=gen, size=size), dim=1)  # (N, V, C, S, S)


def load_splits(cfg: PretrainConfig) -> DataSplits:
    """The run's data; without ``--skip-bad-files`` an unreadable image ends the run, and its error names every
    unreadable file of the data set (:class:`~contrastkit.data.ImageFiles`)."""
    splits = load_dataset(cfg.data, root=cfg.data_root, seed=cfg.seed, val_fraction=cfg.val_fraction,
                          skip_bad_files=cfg.skip_bad_files)
    for part in (splits.train, splits.test):
        if hasattr(part, "name_all_bad_files"):
            part.name_all_bad_files = True
    return splits


def check_data(cfg: PretrainConfig, splits: DataSplits, world: int, needs_labels: bool
               ) -> tuple[PretrainConfig, str | None]:
    """The options that depend on the data and the number of processes: the batch size chosen when unset
    (:func:`~contrastkit.config.fit_batch_size`), then every option checked again with it
    (:func:`~contrastkit.methods.check_options`: a queue a multiple of the batch, ...). Returns the options and
    the note that says a batch size was lowered to fit (None when it was not).

    Raises:
        ValueError: a batch that does not split over the processes or is larger than the data (proposing one that
            fits), a micro-batch that does not divide a process's batch, a labelled method on unlabelled data, or
            a resolution schedule on data that the batched augmentation cannot hold.
    """
    cfg, note = fit_batch_size(cfg, len(splits.train), world)
    cfg = check_options(cfg)
    local = cfg.batch_size // world
    if cfg.micro_batch_size and local % cfg.micro_batch_size:
        raise ValueError(f"--micro-batch-size {cfg.micro_batch_size} must divide the per-process batch {local}")
    if needs_labels and not splits.labelled:
        raise ValueError(f"--method {cfg.method} needs labelled data; {cfg.data} has no class folders")
    if cfg.size_schedule and resolve_augment_on(cfg.augment_on, splits) != "device":
        raise ValueError(f"--size-schedule {cfg.size_schedule!r} needs the batched augmentation, but {cfg.data} "
                         f"takes --augment-on workers (images of mixed sizes, or too many to decode into memory)")
    return cfg, note


def auto_device_budget() -> int:
    """Bytes the decoded training set may take for ``--augment-on auto`` to pick device: 1/8 of the machine's
    memory, at most 4 GiB (2 GiB when the memory size is unknown), shared by the processes torchrun starts on
    this machine (``LOCAL_WORLD_SIZE``), each of which holds its own copy."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        budget = min(4 * 2**30, total // 8)
    except (AttributeError, OSError, ValueError):
        budget = 2 * 2**30
    try:
        local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_processes = 1
    return budget // local_processes


def resolve_augment_on(choice: str, splits: DataSplits, budget: int | None = None) -> str:
    """What ``--augment-on auto`` means for these data.

    ``device`` (decode once, augment batches on the model's device: faster on CPUs and GPUs, benchmarks/README.md)
    when every image is square of one size, so that decoding at that size loses nothing, and the decoded uint8
    training set fits in ``budget`` bytes (:func:`auto_device_budget`); ``workers`` (per-image transforms in
    DataLoader workers, from the original files) otherwise.
    """
    if choice != "auto":
        return choice
    side = splits.image_size
    if not splits.uniform_size or side is None:
        return "workers"
    nbytes = len(splits.train) * 3 * side * side
    return "device" if nbytes <= (auto_device_budget() if budget is None else budget) else "workers"


def resolve_preset(cfg: PretrainConfig, splits: DataSplits) -> AugmentSpec:
    """The augmentation preset and overrides: ``cifar`` for images of <= 64 px, else ``imagenet``."""
    native = splits.image_size
    preset = preset_for(cfg.preset, native)
    size = cfg.size or (native if (native is not None and preset != "cifar" and native < 224)
                        else PRESETS[preset]["size"])
    overrides: dict = {"size": size, "crop_scale": tuple(cfg.crop_scale)}
    if cfg.color_strength >= 0:
        overrides["color_strength"] = cfg.color_strength
    if cfg.blur != "auto":
        overrides["blur"] = cfg.blur == "on"
    overrides.update(cfg.augment or {})
    return AugmentSpec(preset, overrides, size)


def _view_transform(spec: AugmentSpec, n_views: int):
    """Per-image transform giving V views (V = 1: a single tensor, the CE baseline)."""
    base = SimCLRTransform.from_preset(spec.preset, **spec.overrides)
    return MultiViewTransform(base, n_views=n_views) if n_views >= 2 else base


def data_info(cfg: PretrainConfig, splits: DataSplits, spec: AugmentSpec) -> DataInfo:
    """What the run's method is told of the data."""
    return DataInfo(targets=list(getattr(splits.train, "targets", [])), classes=list(splits.classes),
                    image_size=spec.size, data=cfg.data, paths=list(splits.train_paths or []))


def build_data(cfg: PretrainConfig, splits: DataSplits, spec: AugmentSpec, labels: torch.Tensor, n_views: int,
               device: torch.device, rank: int, world: int, bad_files_log: Path | None = None) -> TrainData:
    """The training data (decoded and staged for ``--augment-on device``), the sampler and the monitor's arrays.

    Every rank decodes what it needs here, before the model is wrapped for DistributedDataParallel.
    """
    if bad_files_log is not None:  # DataLoader workers append what they skip here: their own lists die with them
        for part in (splits.train, splits.test):
            if hasattr(part, "bad_files_log"):
                part.bad_files_log = str(bad_files_log)
    mean, std = PRESETS[spec.preset].get("normalize") or ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    augment_on = resolve_augment_on(cfg.augment_on, splits)
    staged = batch_augment = None
    if augment_on == "device":
        images, _ = decode_to_array(splits.train, splits.image_size or spec.size, num_workers=cfg.num_workers,
                                    cache_key=array_cache_key(cfg.data, "train-native"),
                                    progress=cfg.progress and rank == 0)  # once per data set, then cached
        dataset: Dataset = ArrayDataset(images, labels)
        staged = stage_images(images, device)  # on a GPU: the whole array there when it fits
        batch_augment = BatchAugment.from_preset(spec.preset, n_views=n_views, **spec.overrides).to(device)
    else:
        if hasattr(splits.train, "decode_size"):  # JPEGs decoded down to the side the smallest crop still fills
            splits.train.decode_size = math.ceil(spec.size / math.sqrt(min(cfg.crop_scale)))
        dataset = ViewDataset(splits.train, _view_transform(spec, n_views), seed=cfg.seed)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    return TrainData(splits=splits, spec=spec, mean=mean, std=std, n_views=n_views, local_batch=cfg.batch_size // world,
                     steps_per_epoch=len(splits.train) // cfg.batch_size, labels=labels, augment_on=augment_on,
                     dataset=dataset, sampler=sampler, seed=cfg.seed, num_workers=cfg.num_workers, device=device,
                     staged=staged, batch_augment=batch_augment,
                     resolution=parse_size_schedule(cfg.size_schedule, spec.size),
                     monitor=monitor_data(cfg, splits, spec.size, mean, std), bad_files_log=bad_files_log)
