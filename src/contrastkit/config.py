"""The resolved configuration of a pretraining run, and its YAML round trip.

One dataclass holds every option; the command line is generated from its
fields (their ``help`` metadata), so the CLI, YAML files and the Python API
share one source of truth. Precedence: dataclass defaults < YAML file
(``--config``) < command-line flags.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PretrainConfig", "load_yaml", "config_groups", "option_flag", "LOSSES", "SPELLINGS", "RUN_IDENTITY",
           "TRACKING", "DEFAULT_BATCH_SIZE", "fit_batch_size"]

LOSSES = ("ntxent", "ntlogistic", "margin", "npair")
#: The options that make a run what it is: ``--resume`` refuses a checkpoint written with other values (but
#: ``epochs`` with ``--extend``).
RUN_IDENTITY = ("method", "encoder", "width", "head", "head_layers", "proj_dim", "proj_hidden_dim", "cifar_stem",
                "data", "labels", "n_views", "batch_size", "epochs", "seed", "teacher", "queue_size",
                "momentum_encoder", "momentum_ramp")
#: The other spelling of an option's name (British and American), accepted in YAML and on the command line.
SPELLINGS = {"labelled_fraction": "labeled_fraction", "labeled_weight": "labelled_weight"}
#: the names ``--tracking`` takes (contrastkit.tracking has a tracker for each but none)
TRACKING = ("mlflow", "wandb", "none")
#: the batch size of a run that sets none, on a training set of at least this many images (SimCLR's CIFAR-10
#: runs use 256 to 4096, App. B.9; a CPU fits 256)
DEFAULT_BATCH_SIZE = 256


def _opt(default: Any, help: str, **extra: Any) -> Any:
    meta = {"help": help, **extra}
    if isinstance(default, (list, tuple, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class PretrainConfig:
    """Every option of ``contrastkit pretrain``. See the README for the sources of defaults."""

    # what to train
    method: str = _opt("simclr", "the training method, a name of contrastkit.methods: simclr (NT-Xent, SimCLR), "
                       "supcon (L_out/L_in, SupCon), ce (cross-entropy baseline), distill (a student on a "
                       "fine-tuned teacher, SimCLRv2; see contrastkit distill), simclr-queue and supcon-queue (with a "
                       "momentum encoder and a queue of keys, MoCo) or supcon-multilabel (multi-hot labels, --labels)")
    loss: str = _opt("ntxent", "loss for --method simclr: ntxent, ntlogistic, margin or npair (SimCLR Table 4)",
                     choices=LOSSES)
    supcon_variant: str = _opt("out", "SupCon loss variant: out (L_out, better: SupCon Table 1) or in (L_in)",
                               choices=("out", "in"))
    temperature: float | None = _opt(None, "softmax temperature tau; unset: the method's (contrastkit.methods), 0.5 "
                                           "for simclr (SimCLR CIFAR-10, App. B.9) and 0.1 for supcon (SupCon Sec. 4)",
                                     type=float, default_help="the method's")
    margin: float = _opt(0.1, "margin m of the margin triplet loss on cosine similarities (FaceNet's 0.2 on squared "
                              "distances; SimCLR Table 4 tunes it)")
    l2_normalize: bool = _opt(True, "L2-normalise z in NT-Xent / SupCon (cosine similarity); --no-l2-normalize uses "
                                    "raw dot products, the ablation of SimCLR Table 5")
    semi_hard: bool = _opt(False, "semi-hard negative mining for the margin / NT-Logistic losses (SimCLR Table 4)")
    labeled_fraction: float = _opt(1.0, "SupCon: fraction of training labels kept (the rest are -1: own views only)")

    # what to train: distillation (SimCLRv2 Sec. 2.3; contrastkit distill)
    teacher: str = _opt("", "distill: the fine-tuned teacher (eval --protocol finetune --save)",
                        default_help="none")
    distill_temperature: float = _opt(1.0, "distill: temperature tau softening teacher and student predictions")
    labelled_weight: float = _opt(0.0, "distill: weight A of the labelled loss on the teacher's labelled subset, "
                                       "(1 - A) x distillation + A x cross-entropy (SimCLRv2 eq. 3, A = 1 - alpha)")

    # what to train: a momentum encoder and a memory queue (MoCo, He et al. 2020; simclr-queue, supcon-queue)
    momentum_encoder: float | None = _opt(None, "simclr-queue, supcon-queue: momentum m in [0, 1) of the key "
                                                "encoder, a moving average of f and g", type=float,
                                          default_help="the method's, 0.99")
    momentum_ramp: str = _opt("off", "simclr-queue, supcon-queue: off (m throughout) or cosine (m rises to 1 over the "
                                     "run's steps, BYOL Sec. 3.2, MoCo v3)", choices=("off", "cosine"))
    queue_size: int | None = _opt(None, "simclr-queue, supcon-queue: K keys of past batches, more negatives of every "
                                        "anchor (with labels, those of its class are positives); a multiple of "
                                        "--batch-size x --n-views", type=int, default_help="the method's, 4096")

    # data
    data: str = _opt("digits", "digits (offline default), cifar10, cifar100, stl10, or a folder (ImageFolder layout)")
    labels: str = _opt("", "supcon-multilabel: a CSV file with columns path (relative to --data) and labels (names "
                           "separated by ';'), the label set of every training image of a folder")
    data_root: str = _opt("~/.cache/contrastkit/datasets", "where torchvision data sets are looked for / downloaded")
    num_workers: int = _opt(2, "DataLoader worker processes")
    augment_on: str = _opt("auto", "workers: per-image torchvision transforms in DataLoader workers; device: "
                                   "images decoded once, batched augmentation on the model's device; auto: device "
                                   "when every image is square of one size and the decoded training set takes at "
                                   "most 1/8 of the memory (4 GiB at most), else workers",
                           choices=("auto", "workers", "device"))
    skip_bad_files: bool = _opt(False, "skip unreadable image files (counted in the summary) instead of stopping")
    val_fraction: float = _opt(0.2, "test fraction when a folder has no train/ and test/ subfolders")

    # augmentation (SimCLR Sec. 3, App. A)
    preset: str = _opt("auto", "augmentation preset: cifar (32 px, no blur), imagenet (224 px, blur) or auto")
    size: int = _opt(0, "crop size in pixels (0: the preset's)")
    size_schedule: str = _opt("", "resolution schedule: smaller views early in the run, as SIZE:UNTIL pairs, e.g. "
                                  "16:0.5,24:0.8 (16 px for the first half of the schedule's progress, 24 px up to "
                                  "0.8 of it, then --size; a last part at 1, e.g. 24:1, keeps its size to the end); "
                                  "needs --augment-on device (augment/resolution.py); "
                                  "empty: --size throughout")
    crop_scale: tuple = _opt((0.08, 1.0), "random resized crop scale range (SimCLR App. A: 0.08-1)", nargs=2, type=float)
    color_strength: float = _opt(-1.0, "colour distortion strength s (-1: the preset's; SimCLR: 1.0 ImageNet, 0.5 CIFAR)")
    blur: str = _opt("auto", "Gaussian blur: on, off or auto (the preset's)", choices=("on", "off", "auto"))
    augment: dict = _opt({}, "other augmentation settings as KEY=VALUE (repeatable), e.g. rotate=0.5 cutout=0.5 "
                             "color=false (names of contrastkit.augment.AugmentConfig)")
    n_views: int = _opt(2, "views per image V (2 in the papers; SupCon accepts any V >= 2)")

    # model
    encoder: str = _opt("resnet18", "encoder f: resnet18, resnet34, resnet50 or timm:<name>")
    cifar_stem: str = _opt("auto", "3x3 stride-1 stem without max-pool (SimCLR App. B.9): on, off, auto (on for <= 64 px)",
                           choices=("on", "off", "auto"))
    width: float = _opt(1.0, "ResNet width multiplier (0.25 gives 16-32-64-128 channels for ResNet-18)")
    head: str = _opt("mlp", "projection head g: mlp (one hidden layer), linear or none (SimCLR Fig. 8)",
                     choices=("mlp", "linear", "none"))
    head_layers: int = _opt(2, "Linear layers K of the MLP head: K - 1 Linear-BN-ReLU blocks, then a Linear layer "
                               "(2: SimCLR; 3: SimCLRv2 Sec. 2.2, which fine-tunes from the first block)")
    proj_dim: int = _opt(128, "output dimension of z (128, SimCLR Sec. 2.1)")
    proj_hidden_dim: int = _opt(0, "hidden width of the MLP head (0: the encoder's feature dimension, as SimCLR)")

    # optimisation (SimCLR Sec. 2.2, App. B.1)
    epochs: int = _opt(100, "training epochs")
    batch_size: int | None = _opt(None, "global batch size N (images; each gives V views); unset: 256, or for a "
                                        "smaller training set the largest power of two that fits (a note says so)",
                                  type=int, default_help=f"{DEFAULT_BATCH_SIZE}, lowered to fit a smaller training set")
    micro_batch_size: int = _opt(0, "gradient caching micro-batch (0: off); exact for BN-free models")
    optimizer: str = _opt("sgd", "sgd (momentum) or lars (SimCLR's optimiser)", choices=("sgd", "lars"))
    lr: float = _opt(0.06, "base learning rate, scaled by --lr-scaling")
    lr_scaling: str = _opt("linear", "linear: lr x batch/256 (SimCLR Sec. 2.2: 0.3 x B/256 with LARS); sqrt: lr x "
                                     "sqrt(batch) (SimCLR App. B.1, small batches); none",
                           choices=("linear", "sqrt", "none"))
    momentum: float = _opt(0.9, "SGD / LARS momentum")
    weight_decay: float = _opt(5e-4, "weight decay, not applied to biases and norm layers (SimCLR: 1e-6 with LARS)")
    warmup_epochs: float = _opt(0.0, "linear warm-up epochs before cosine decay (SimCLR: 10)")
    min_lr_ratio: float = _opt(0.0, "final learning rate as a fraction of the peak")
    schedule: str = _opt("steps", "the warm-up + cosine schedule spans the steps of --epochs (steps), or the "
                                  "--time-budget-s seconds (time: for fixed-time budgets; not bit-exact on resume)",
                         choices=("steps", "time"))

    # run
    seed: int = _opt(0, "random seed (data order, augmentation, initialisation)")
    device: str = _opt("auto", "cpu, cuda, cuda:N or auto")
    precision: str = _opt("auto", "auto (bf16 autocast on GPU, fp16 with loss scaling on GPUs without bf16; on a CPU "
                          "bf16 where it has bf16 instructions (AMX or AVX512-BF16) that oneDNN may use, else "
                          "fp32: train/precision.py), fp32, bf16 or fp16 (with loss scaling)",
                          choices=("auto", "fp32", "bf16", "fp16"))
    channels_last: str = _opt("auto", "channels_last memory format: on, off, auto (on for GPUs and CPUs, "
                              "where oneDNN convolutions are faster in it; off on a CPU for encoders narrow enough "
                              "to meet oneDNN's broken strided 1x1 kernel, train/memory_format.py)",
                              choices=("on", "off", "auto"))
    compile: bool = _opt(False, "torch.compile the model (measured in benchmarks/)")
    malloc: str = _opt("auto", "auto: on CPU runs, keep freed memory in the process between steps (glibc mmap/trim "
                       "thresholds; skipped when jemalloc/tcmalloc is preloaded or MALLOC_* is set), so a step does "
                       "not page-fault its activations back in; off: leave the allocator alone",
                       choices=("auto", "off"))
    sync_bn: bool = _opt(False, "convert BatchNorm to SyncBatchNorm under torchrun (global BN, SimCLR Sec. 2.2; GPU only)")
    out: str = _opt("runs/pretrain", "output folder: config.yaml, last.pt, metrics.jsonl, TensorBoard events")
    resume: bool = _opt(False, "continue from OUT/last.pt")
    extend: bool = _opt(False, "with --resume: train the run further, to a new --epochs total (a finished run "
                               "too), from its weights and optimiser state; the warm-up + cosine schedule becomes "
                               "that of the new total, from the checkpoint's step on")
    overwrite: bool = _opt(False, "start again in an OUT that holds a run: its outputs (checkpoints, metrics, "
                                  "TensorBoard events, eval_* and embedding files) are deleted first")
    checkpoint_every_steps: int = _opt(0, "also checkpoint every this many steps within an epoch (0: epoch ends only)")
    on_nonfinite: str = _opt("stop", "a NaN/inf loss or gradient: stop (with step and checkpoint) or skip the step",
                             choices=("stop", "skip"))
    max_steps: int = _opt(0, "stop after this many optimiser steps in total (0: no limit; for tests and budgets)")
    time_budget_s: float = _opt(0.0, "stop training after this many seconds of training (0: no limit)")
    dist_timeout_s: float = _opt(1800.0, "under torchrun: how long a collective waits for the slowest process before "
                                          "the run fails (torch.distributed's timeout; torch's default is 600 s)")

    # monitoring
    knn_every: int = _opt(1, "kNN monitor every this many epochs (0: off)")
    knn_every_s: float = _opt(0.0, "also run the kNN monitor every this many seconds of training, mid-epoch (0: "
                                   "off): an accuracy-over-time curve in metrics.jsonl; its own time is not "
                                   "training time")
    knn_k: int = _opt(200, "k of the kNN monitor (Wu et al. 2018)")
    knn_temperature: float = _opt(0.1, "vote temperature of the kNN monitor")
    log_every: int = _opt(10, "log the loss every this many steps (each log syncs with the device)")
    progress: bool = _opt(True, "show a tqdm progress bar")
    sync_debug: bool = _opt(False, "CUDA only: raise at any host synchronisation inside a training step after the "
                                   "first (torch.cuda.set_sync_debug_mode), to check that the loop runs ahead of "
                                   "the GPU; logging and checkpoint steps are outside the check")
    tracking: list = _opt([], "experiment tracking beside metrics.jsonl and TensorBoard: mlflow (MLFLOW_TRACKING_URI, "
                              "else mlflow.db in the working folder), wandb (offline unless logged in) or none; "
                              "repeatable or comma-separated; a resume continues the same tracked run",
                          type=str, action="append", metavar="NAME", default_help="none")
    tracking_experiment: str = _opt("contrastkit", "the MLflow experiment / W&B project of a tracked run",
                                    metavar="NAME")

    def tracking_backends(self) -> list[str]:
        """The tracking services of ``tracking`` (a list, repeated flags, or a comma-separated string), in order,
        without repeats or ``none``."""
        items = [self.tracking] if isinstance(self.tracking, str) else list(self.tracking)
        names = [n.strip().lower() for item in items for n in str(item).split(",") if n.strip()]
        return [n for i, n in enumerate(names) if n != "none" and n not in names[:i]]

    def validate(self) -> None:
        """Check every option on its own, each with a message naming the option, what it got and what it takes.

        :func:`contrastkit.methods.check_options` calls this, then the method's own checks (an option of another
        method, the views and batch a method needs), before anything is created; the checks that need the data
        (a batch larger than the training set, labels for SupCon) come when the data are loaded.

        Raises:
            ValueError: the first bad option.
        """
        _check_types(self)
        for check in (_check_training, _check_data, _check_augmentation, _check_model, _check_optimisation,
                      _check_run, _check_monitoring):
            check(self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop_scale"] = list(self.crop_scale)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PretrainConfig":
        """Options from a mapping (a YAML file, a checkpoint's config); the other spelling of an option
        (:data:`SPELLINGS`) is accepted.

        Raises:
            ValueError: an unknown key, naming the closest known ones.
        """
        values = {SPELLINGS.get(k, k): v for k, v in values.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            hints = [f"{k!r} (did you mean {', '.join(repr(c) for c in close)}?)" if close else repr(k)
                     for k in unknown for close in [difflib.get_close_matches(k, known, n=1, cutoff=0.6)]]
            raise ValueError(f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                             f"`contrastkit pretrain --help` lists every option")
        if "crop_scale" in values:
            values["crop_scale"] = tuple(values["crop_scale"])
        return cls(**values)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# The sections of PretrainConfig, in order: each named by its first field. They are the groups of `pretrain --help`.
_GROUP_STARTS = {"method": "what to train", "momentum_encoder": "what to train: momentum encoder and queue",
                 "data": "data", "preset": "augmentation", "encoder": "model",
                 "epochs": "optimisation", "seed": "run", "knn_every": "monitoring"}


def config_groups() -> dict[str, list[str]]:
    """The field names of each section of :class:`PretrainConfig` (what to train, data, augmentation, model,
    optimisation, run, monitoring), in declaration order."""
    groups: dict[str, list[str]] = {}
    title = None
    for f in dataclasses.fields(PretrainConfig):
        title = _GROUP_STARTS.get(f.name, title)
        groups.setdefault(title, []).append(f.name)
    return groups


def option_flag(name: str) -> str:
    """The command-line flag of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _check_types(cfg: PretrainConfig) -> None:
    """Every option has its field's type (a YAML file can hold anything), numbers are finite, and options with a
    fixed set of values hold one of them."""
    for f in dataclasses.fields(cfg):
        value, flag = getattr(cfg, f.name), option_flag(f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if default is None:  # an option whose default is the method's: unset, or of its declared type
            if value is None:
                continue
            default = f.metadata["type"]()
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


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


#: the largest float32 (torch.finfo(torch.float32).max)
FLOAT32_MAX = 3.4028234663852886e38


def min_temperature(anchors: int) -> float:
    """The smallest temperature at which a contrastive loss over ``anchors`` anchors (views in the batch) stays
    finite in float32, with a factor 2 to spare.

    Each anchor's term is ``log sum_a exp(s_a / tau) - s_p / tau`` over cosine similarities s in [-1, 1]; with the
    row maximum subtracted nothing overflows inside it, and it is at most ``2 / tau + log(anchors)`` (a positive
    pointing away, a negative pointing the same way). The loss is their mean, summed before it is divided:
    ``anchors * 2 / tau`` must stay below the largest float32, so tau >= 2 * anchors / FLOAT32_MAX; the gradient
    with respect to the similarities is ``(p - y) / tau``, smaller. ``tests/losses/test_temperature_bound.py``
    holds both sides of this bound.
    """
    return 4.0 * max(1, anchors) / FLOAT32_MAX


def _check_training(cfg: PretrainConfig) -> None:
    _require(cfg.method != "", "--method must name a training method (contrastkit.methods), got an empty string")
    _require(cfg.temperature is None or 0 < cfg.temperature < float("inf"),
             f"--temperature must be a finite number > 0, got {cfg.temperature}")
    anchors = max(1, int(cfg.batch_size or DEFAULT_BATCH_SIZE)) * max(1, int(cfg.n_views))
    if cfg.temperature is not None:
        _require(cfg.temperature >= min_temperature(anchors),
                 f"--temperature {cfg.temperature:g} is too small for float32: the loss averages {anchors} terms "
                 f"(--batch-size x --n-views) of up to 2/temperature each, which overflow below temperature "
                 f"{min_temperature(anchors):.2g}; use a temperature >= that (the papers use 0.05 to 1)")
    _require(cfg.margin >= 0, f"--margin must be >= 0, got {cfg.margin}")
    _require(0 < cfg.labeled_fraction <= 1, f"--labeled-fraction must be in (0, 1], got {cfg.labeled_fraction}")


def _check_data(cfg: PretrainConfig) -> None:
    _require(cfg.num_workers >= 0, f"--num-workers must be >= 0, got {cfg.num_workers}")
    _require(0 < cfg.val_fraction < 1, f"--val-fraction must be in (0, 1), got {cfg.val_fraction}")


def _check_augmentation(cfg: PretrainConfig) -> None:
    from .augment import PRESETS, parse_size_schedule, preset_config

    _require(cfg.preset == "auto" or cfg.preset in PRESETS,
             f"--preset must be auto or one of {', '.join(sorted(PRESETS))}, got {cfg.preset!r}")
    _require(cfg.size >= 0, f"--size must be >= 0 (0: the preset's), got {cfg.size}")
    lo, hi = cfg.crop_scale
    _require(0 < lo <= hi <= 1, f"--crop-scale must satisfy 0 < min <= max <= 1, got {lo} {hi}")
    _require(cfg.n_views >= 1, f"--n-views must be >= 1, got {cfg.n_views}")
    if cfg.augment:
        try:
            preset_config("cifar", **cfg.augment)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--augment {cfg.augment}: {exc}") from exc
    if cfg.size_schedule:
        parse_size_schedule(cfg.size_schedule, max(cfg.size, 4))  # the format; the final size is the data's
        _require(cfg.augment_on != "workers", f"--size-schedule {cfg.size_schedule!r} needs the batched "
                                              f"augmentation (--augment-on device or auto), got --augment-on workers")


def _check_model(cfg: PretrainConfig) -> None:
    from .models import check_head_layers, list_encoders

    _require(cfg.encoder in list_encoders() or cfg.encoder.startswith("timm:"),
             f"unknown encoder {cfg.encoder!r}; known encoders: {', '.join(list_encoders())}")
    _require(cfg.width > 0, f"--width must be > 0, got {cfg.width}")
    _require(cfg.proj_dim >= 1, f"--proj-dim must be >= 1, got {cfg.proj_dim}")
    _require(cfg.proj_hidden_dim >= 0, f"--proj-hidden-dim must be >= 0 (0: the encoder's feature dimension), got "
                                       f"{cfg.proj_hidden_dim}")
    check_head_layers(cfg.head, cfg.head_layers)


def _check_optimisation(cfg: PretrainConfig) -> None:
    _require(cfg.epochs > 0, f"--epochs must be a positive integer, got {cfg.epochs!r}")
    _require(cfg.batch_size is None or cfg.batch_size > 0,
             f"--batch-size must be a positive integer, got {cfg.batch_size!r}")
    _require(cfg.micro_batch_size >= 0, f"--micro-batch-size must be >= 0 (0: off), got {cfg.micro_batch_size}")
    _require(not (cfg.micro_batch_size and cfg.batch_size and cfg.batch_size % cfg.micro_batch_size),
             f"--micro-batch-size must divide --batch-size {cfg.batch_size}, got {cfg.micro_batch_size}")
    _require(cfg.lr > 0, f"--lr must be > 0, got {cfg.lr}")
    _require(0 <= cfg.momentum < 1, f"--momentum must be in [0, 1), got {cfg.momentum}")
    _require(cfg.weight_decay >= 0, f"--weight-decay must be >= 0, got {cfg.weight_decay}")
    _require(0 <= cfg.warmup_epochs <= cfg.epochs,
             f"--warmup-epochs must be in [0, epochs={cfg.epochs}], got {cfg.warmup_epochs}")
    _require(0 <= cfg.min_lr_ratio <= 1, f"--min-lr-ratio must be in [0, 1], got {cfg.min_lr_ratio}")
    _require(cfg.schedule != "time" or cfg.time_budget_s > 0, "--schedule time needs --time-budget-s > 0")


def _check_run(cfg: PretrainConfig) -> None:
    from .runtime import resolve_device

    _require(0 <= cfg.seed < 2**32, f"--seed must be in [0, 2**32), got {cfg.seed}")
    for name in ("checkpoint_every_steps", "max_steps", "time_budget_s"):
        _require(getattr(cfg, name) >= 0, f"{option_flag(name)} must be >= 0 (0: off), got {getattr(cfg, name)}")
    _require(cfg.dist_timeout_s > 0, f"--dist-timeout-s must be > 0, got {cfg.dist_timeout_s}")
    _require(not (cfg.resume and cfg.overwrite), "--overwrite deletes OUT's run and --resume continues it; "
                                                 "give one of them")
    _require(cfg.resume or not cfg.extend, "--extend continues a run in OUT: it needs --resume")
    device = resolve_device(cfg.device, "--device")
    if cfg.sync_debug:
        _require(device.type == "cuda", f"--sync-debug checks CUDA synchronisations "
                                        f"(torch.cuda.set_sync_debug_mode); the run's device is {device}")
        _require(not cfg.sync_bn, "--sync-debug cannot check a run with --sync-bn: SyncBatchNorm reads the device "
                                  "back in every forward pass (docs/usage.md); leave one of them out")


def _check_monitoring(cfg: PretrainConfig) -> None:
    _require(cfg.knn_every >= 0, f"--knn-every must be >= 0 (0: off), got {cfg.knn_every}")
    _require(cfg.knn_every_s >= 0, f"--knn-every-s must be >= 0 (0: off), got {cfg.knn_every_s}")
    _require(cfg.knn_k >= 1, f"--knn-k must be >= 1, got {cfg.knn_k}")
    _require(cfg.knn_temperature > 0, f"--knn-temperature must be > 0, got {cfg.knn_temperature}")
    _require(cfg.log_every >= 1, f"--log-every must be >= 1, got {cfg.log_every}")
    _check_tracking(cfg)


def _check_tracking(cfg: PretrainConfig) -> None:
    items = [cfg.tracking] if isinstance(cfg.tracking, str) else cfg.tracking
    _require(isinstance(items, (list, tuple)) and all(isinstance(i, str) for i in items),
             f"--tracking must be names ({', '.join(TRACKING)}), got {cfg.tracking!r}")
    names = [n.strip().lower() for item in items for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRACKING]
    _require(not unknown, f"--tracking must be one or more of {', '.join(TRACKING)}, got {', '.join(unknown)}")
    _require("none" not in names or set(names) == {"none"},
             f"--tracking none turns tracking off; got it with {', '.join(n for n in names if n != 'none')}")
    bad = set(cfg.tracking_experiment) & set("/\\#?%:")
    _require(bool(cfg.tracking_experiment.strip()) and not bad and len(cfg.tracking_experiment) <= 128,
             f"--tracking-experiment must be a name of 1-128 characters without / \\ # ? % :, got "
             f"{cfg.tracking_experiment!r}")


def _largest_fitting(n_train: int, world: int) -> int:
    """The largest power of two of images per process that ``n_train`` images fill, times ``world`` (0: fewer
    images than processes). A power of two keeps the usual ``--micro-batch-size`` and ``--queue-size`` (multiples
    of the batch) valid."""
    per_process = n_train // world
    return (1 << (per_process.bit_length() - 1)) * world if per_process >= 1 else 0


def fit_batch_size(cfg: PretrainConfig, n_train: int, world: int = 1) -> tuple[PretrainConfig, str | None]:
    """The options with the batch size of a run on ``n_train`` training images over ``world`` processes, checked,
    and a one-line note when an unset batch size was lowered.

    Unset (None): :data:`DEFAULT_BATCH_SIZE`, or for a training set smaller than that the largest power of two
    (times ``world``) that fits. A batch size that was given is kept, and refused when it cannot be used.

    Raises:
        ValueError: a batch size that does not split over the processes or is larger than the training set (the
            message proposes one that fits), or a training set with fewer images than processes.
    """
    fitting = _largest_fitting(n_train, world)
    note = None
    if cfg.batch_size is None:
        _require(fitting > 0, f"the training set has {n_train} images, fewer than the {world} processes: each "
                              f"process needs at least one image per step")
        size = DEFAULT_BATCH_SIZE if n_train >= DEFAULT_BATCH_SIZE else fitting
        if size != DEFAULT_BATCH_SIZE:
            note = (f"note: --batch-size {size}: the default, {DEFAULT_BATCH_SIZE}, is larger than the training set "
                    f"({n_train} images); give --batch-size to choose another")
        cfg = dataclasses.replace(cfg, batch_size=size)
    _require(cfg.batch_size % world == 0, f"--batch-size {cfg.batch_size} must be divisible by the {world} processes")
    if cfg.batch_size > n_train:
        hint = (f"use --batch-size {fitting} or less, or leave it out to have one chosen that fits" if fitting else
                f"each of the {world} processes needs at least one image per step")
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the training set ({n_train} images); {hint}")
    return cfg, note


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of options (keys with '-' or '_' both accepted)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must hold a mapping of option: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
