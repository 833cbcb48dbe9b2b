"""Turning a :class:`PretrainConfig` into data, transforms and a model, with validation up front."""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import LOSSES, METHODS, PretrainConfig
from ..data import DataSplits, load_dataset
from ..encoders import list_encoders
from ..heads import check_head_layers
from .distill import build_distillation_model, check_distill_config, distill_labels
from ..model import ContrastiveModel, build_model

__all__ = ["validate_config", "resolve_preset", "build_view_transform", "build_batch_augment", "build_run_model",
           "resolve_device", "check_output_dir", "labels_for_training", "AugmentSpec"]


def validate_config(cfg: PretrainConfig) -> None:
    """Reject bad options before any work starts (clear ValueErrors naming the option)."""
    def bad(msg: str) -> None:
        raise ValueError(msg)

    _check_types(cfg)
    if cfg.method not in METHODS:
        bad(f"--method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.loss not in LOSSES:
        bad(f"--loss must be one of {', '.join(LOSSES)}, got {cfg.loss!r}")
    if not cfg.l2_normalize and (cfg.method == "ce" or (cfg.method == "simclr" and cfg.loss != "ntxent")):
        bad(f"--no-l2-normalize applies to NT-Xent and SupCon; got --method {cfg.method} --loss {cfg.loss}, which "
            f"has no temperature-scaled dot product to leave unnormalised")
    if not isinstance(cfg.epochs, int) or cfg.epochs <= 0:
        bad(f"--epochs must be a positive integer, got {cfg.epochs!r}")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size <= 0:
        bad(f"--batch-size must be a positive integer, got {cfg.batch_size!r}")
    if cfg.micro_batch_size < 0 or (cfg.micro_batch_size and cfg.batch_size % cfg.micro_batch_size):
        bad(f"--micro-batch-size must divide --batch-size {cfg.batch_size}, got {cfg.micro_batch_size}")
    if not (cfg.temperature > 0 and cfg.temperature < float("inf")):
        bad(f"--temperature must be a finite number > 0, got {cfg.temperature}")
    if not cfg.lr > 0:
        bad(f"--lr must be > 0, got {cfg.lr}")
    if cfg.weight_decay < 0 or not 0 <= cfg.momentum < 1:
        bad(f"--weight-decay must be >= 0 and --momentum in [0, 1), got {cfg.weight_decay}, {cfg.momentum}")
    if cfg.warmup_epochs < 0 or cfg.warmup_epochs > cfg.epochs:
        bad(f"--warmup-epochs must be in [0, epochs={cfg.epochs}], got {cfg.warmup_epochs}")
    check_distill_config(cfg)
    if cfg.method not in ("ce", "distill") and cfg.n_views < 2:
        bad(f"--n-views must be >= 2 for contrastive methods, got {cfg.n_views}")
    if not 0 < cfg.labeled_fraction <= 1:
        bad(f"--labeled-fraction must be in (0, 1], got {cfg.labeled_fraction}")
    if cfg.labeled_fraction < 1 and cfg.method != "supcon":
        bad(f"--labeled-fraction applies to --method supcon only, got --method {cfg.method}")
    if cfg.num_workers < 0:
        bad(f"--num-workers must be >= 0, got {cfg.num_workers}")
    lo, hi = cfg.crop_scale
    if not 0 < lo <= hi <= 1:
        bad(f"--crop-scale must satisfy 0 < min <= max <= 1, got {lo} {hi}")
    if cfg.size < 0 or cfg.width <= 0:
        bad(f"--size must be >= 0 and --width > 0, got {cfg.size}, {cfg.width}")
    if not (cfg.encoder in list_encoders() or cfg.encoder.startswith("timm:")):
        bad(f"unknown encoder {cfg.encoder!r}; known encoders: {', '.join(list_encoders())}")
    if cfg.knn_k < 1 or cfg.knn_every < 0 or cfg.log_every < 1:
        bad(f"--knn-k must be >= 1, --knn-every >= 0 and --log-every >= 1, got {cfg.knn_k}, {cfg.knn_every}, "
            f"{cfg.log_every}")
    if cfg.time_budget_s < 0 or cfg.max_steps < 0 or cfg.checkpoint_every_steps < 0:
        bad(f"--time-budget-s, --max-steps and --checkpoint-every-steps must be >= 0, got {cfg.time_budget_s}, "
            f"{cfg.max_steps}, {cfg.checkpoint_every_steps}")
    if not 0 <= cfg.min_lr_ratio <= 1:
        bad(f"--min-lr-ratio must be in [0, 1], got {cfg.min_lr_ratio}")
    if not cfg.knn_temperature > 0 or cfg.margin < 0:
        bad(f"--knn-temperature must be > 0 and --margin >= 0, got {cfg.knn_temperature}, {cfg.margin}")
    if not 0 < cfg.val_fraction < 1:
        bad(f"--val-fraction must be in (0, 1), got {cfg.val_fraction}")
    if cfg.proj_dim < 1 or cfg.proj_hidden_dim < 0:
        bad(f"--proj-dim must be >= 1 and --proj-hidden-dim >= 0, got {cfg.proj_dim}, {cfg.proj_hidden_dim}")
    check_head_layers(cfg.head, cfg.head_layers)
    if not 0 <= cfg.seed < 2**32:
        bad(f"--seed must be in [0, 2**32), got {cfg.seed}")
    from ..augment import PRESETS

    if cfg.preset != "auto" and cfg.preset not in PRESETS:
        bad(f"--preset must be auto or one of {', '.join(sorted(PRESETS))}, got {cfg.preset!r}")
    if cfg.schedule == "time" and not cfg.time_budget_s:
        bad("--schedule time needs --time-budget-s > 0")
    if cfg.augment:
        from ..augment import preset_config

        try:
            preset_config("cifar", **cfg.augment)
        except (TypeError, ValueError) as exc:
            bad(f"--augment {cfg.augment}: {exc}")


def _check_types(cfg: PretrainConfig) -> None:
    """Every option has its field's type (a YAML file can hold anything), numbers are finite,
    and options with a fixed set of values hold one of them."""
    for f in dataclasses.fields(cfg):
        value, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, want = number and math.isfinite(value), "a finite number"
        elif isinstance(default, str):
            ok, want = isinstance(value, str), "a string"
        elif isinstance(default, tuple):
            ok = isinstance(value, (tuple, list)) and len(value) == len(default) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            want = f"{len(default)} finite numbers"
        elif isinstance(default, dict):
            ok, want = isinstance(value, dict), "a mapping of KEY=VALUE settings"
        else:  # a field of another kind: checked by the rules below, if any
            ok, want = True, ""
        if not ok:
            raise ValueError(f"{flag} must be {want}, got {value!r} ({type(value).__name__})")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ValueError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


def check_output_dir(out: str | os.PathLike, min_free_bytes: int = 200 * 2**20) -> Path:
    """Create ``out`` and prove it is writable with enough free space, before any training."""
    path = Path(out).expanduser()
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", local)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for, but CUDA is not available")
    return device


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


def resolve_preset(cfg: PretrainConfig, splits: DataSplits) -> AugmentSpec:
    """The augmentation preset and overrides: ``cifar`` for images of <= 64 px, else ``imagenet``."""
    native = splits.image_size
    preset = cfg.preset
    if preset == "auto":
        preset = "cifar" if native is not None and native <= 64 else "imagenet"
    from ..augment import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; known presets: {', '.join(sorted(PRESETS))}")
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
        from ..evaluate import class_balanced_subset

        keep = class_balanced_subset(labels, cfg.labeled_fraction, seed=cfg.seed)
        partial = torch.full_like(labels, -1)
        partial[keep] = labels[keep]
        return partial
    return labels


def load_splits(cfg: PretrainConfig) -> DataSplits:
    return load_dataset(cfg.data, root=cfg.data_root, seed=cfg.seed, val_fraction=cfg.val_fraction,
                        skip_bad_files=cfg.skip_bad_files)
