"""The pieces a run is built from: the data splits and labels, the augmentation preset and transforms, the model,
and the output folder. :mod:`.run` puts them together; evaluation rebuilds a checkpoint's model with
:func:`build_run_model`."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import PretrainConfig
from ..data import DataSplits, class_balanced_subset, load_dataset
from ..model import ContrastiveModel, build_model
from .distill import build_distillation_model, distill_labels

__all__ = ["preset_for", "resolve_preset", "build_view_transform", "build_batch_augment", "build_run_model", "check_output_dir",
           "labels_for_training", "load_splits", "resolve_augment_on", "auto_device_budget", "AugmentSpec"]


def check_output_dir(out: str | os.PathLike, min_free_bytes: int = 200 * 2**20) -> Path:
    """Create ``out`` and prove it is writable with enough free space, before any training."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file; expected a folder to write the run into")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise ValueError(f"output folder {path} is not writable: {exc}") from exc
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise ValueError(f"output folder {path} has only {free / 2**20:.0f} MiB free; "
                         f"checkpoints need at least {min_free_bytes / 2**20:.0f} MiB")
    return path


@dataclass
class AugmentSpec:
    preset: str
    overrides: dict
    size: int


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


def preset_for(preset: str, image_size: int | None) -> str:
    """What ``--preset auto`` means for images of side ``image_size`` (None: of mixed sizes): ``cifar`` up to 64 px,
    else ``imagenet``; any other name is checked against the known presets.

    Raises:
        ValueError: an unknown preset name.
    """
    from ..augment import PRESETS

    if preset == "auto":
        preset = "cifar" if image_size is not None and image_size <= 64 else "imagenet"
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; known presets: {', '.join(sorted(PRESETS))}")
    return preset


def resolve_preset(cfg: PretrainConfig, splits: DataSplits) -> AugmentSpec:
    """The augmentation preset and overrides: ``cifar`` for images of <= 64 px, else ``imagenet``."""
    from ..augment import PRESETS

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


def build_view_transform(spec: AugmentSpec, n_views: int):
    """Per-image transform giving V views (V = 1: a single tensor, the CE baseline)."""
    from ..augment import MultiViewTransform, SimCLRTransform

    base = SimCLRTransform.from_preset(spec.preset, **spec.overrides)
    return MultiViewTransform(base, n_views=n_views) if n_views >= 2 else base


def build_batch_augment(spec: AugmentSpec, n_views: int):
    from ..augment import BatchAugment

    return BatchAugment.from_preset(spec.preset, n_views=n_views, **spec.overrides)


def build_run_model(cfg: PretrainConfig, num_classes: int, image_size: int) -> ContrastiveModel:
    if cfg.method == "distill":  # the student and its frozen teacher (train/distill.py)
        return build_distillation_model(cfg, image_size)
    stem = cfg.cifar_stem == "on" or (cfg.cifar_stem == "auto" and image_size <= 64)
    return build_model(
        cfg.encoder,
        cifar_stem=stem,
        width=cfg.width,
        head=cfg.head,
        proj_hidden_dim=cfg.proj_hidden_dim or None,
        proj_dim=cfg.proj_dim,
        num_classes=num_classes if cfg.method == "ce" else None,
        head_layers=cfg.head_layers,
    )


def labels_for_training(cfg: PretrainConfig, targets: list[int], num_classes: int) -> torch.Tensor:
    """Training labels by index: all -1 for SimCLR; SupCon with ``labeled_fraction`` < 1 keeps a
    seeded class-balanced subset and marks the rest -1 (own views only)."""
    if cfg.method == "distill":
        return distill_labels(cfg, targets)
    labels = torch.as_tensor(targets, dtype=torch.long)
    if cfg.method == "simclr":
        return torch.full_like(labels, -1)
    if (labels < 0).any():
        raise ValueError(f"--method {cfg.method} needs labels, but the training data holds "
                         f"{int((labels < 0).sum())} unlabelled images (use --method simclr, or a folder with "
                         f"one subfolder per class)")
    if cfg.method == "supcon" and cfg.labeled_fraction < 1:
        keep = class_balanced_subset(labels, cfg.labeled_fraction, seed=cfg.seed)
        partial = torch.full_like(labels, -1)
        partial[keep] = labels[keep]
        return partial
    return labels


def load_splits(cfg: PretrainConfig) -> DataSplits:
    return load_dataset(cfg.data, root=cfg.data_root, seed=cfg.seed, val_fraction=cfg.val_fraction,
                        skip_bad_files=cfg.skip_bad_files)
