"""Checkpoint files: atomic writes, strict loads, what a checkpoint says about itself, and the model it holds.

Saving writes ``<path>.tmp``, flushes and fsyncs it, then renames it over
``<path>`` (an atomic replacement on POSIX file systems) and fsyncs the folder; the
previous good checkpoint is kept as ``<stem>.prev.pt``. A process killed at any
moment leaves a loadable ``last.pt`` (or, before the first save, none).

Everything stored is a tensor, a number, a string or a container of those, so
checkpoints load with ``torch.load(weights_only=True)``: loading runs no pickled code.
A checkpoint is named ``*.pt`` (or ``*.pth``), and its bytes are checked before it is read
(:func:`read_torch_file`): a torch.save archive, not TorchScript, whose ``torch.load`` would
run code (torch refuses it under ``weights_only=True`` and advises ``weights_only=False``,
advice contrastkit's messages never repeat).

:func:`load_checkpoint_model` is the one way a checkpoint becomes a model: a pretraining run's ``last.pt`` (its
:class:`~contrastkit.models.ContrastiveModel`, or the student of a distillation run), or a fine-tuned network
(:mod:`.finetuned`). What the checkpoint says about its input and origin is one :class:`CheckpointMeta`.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..runtime.ownership import fsync_dir, os_error_text
from .build import Architecture, build_model
from .finetuned import FineTunedNetwork, finetuned_state, is_finetuned

__all__ = ["save_checkpoint", "load_checkpoint", "resolve_checkpoint", "CheckpointError", "CheckpointMeta",
           "load_checkpoint_model", "save_finetuned", "read_torch_file", "is_torchscript_archive",
           "CHECKPOINT_SUFFIXES"]

#: the names of a checkpoint file (a torch.save archive of tensors)
CHECKPOINT_SUFFIXES = (".pt", ".pth")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not match the model."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, keep_previous: bool = True) -> Path:
    """Write ``state`` to ``path`` atomically; with ``keep_previous``, the file it replaces stays as ``*.prev.pt``.

    Raises:
        CheckpointError: the file could not be written (disk full, quota, I/O error); ``path``
            still holds the previous checkpoint and no temporary file is left behind.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            _keep_previous(path)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a failed write as RuntimeError
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        kept = f"{path} still holds the previous checkpoint" if path.is_file() else "no checkpoint was written"
        why = os_error_text(exc) if isinstance(exc, OSError) else str(exc).strip().splitlines()[0]
        raise CheckpointError(f"could not write checkpoint {path} ({why}); {kept}. Free disk space (or choose a "
                              f"writable path) and resume with --resume.") from exc
    fsync_dir(path.parent)
    return path


def _keep_previous(path: Path) -> None:
    """``<stem>.prev.pt``: a hard link to the checkpoint about to be replaced (best effort: the new file is still
    written atomically when this fails)."""
    prev = path.with_name(path.stem + ".prev" + path.suffix)
    try:
        prev.unlink(missing_ok=True)
        os.link(path, prev)
    except OSError:
        pass


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: the file itself (``*.pt`` or ``*.pth``), or a run folder's ``last.pt``.

    Raises:
        CheckpointError: the path does not exist, is a folder without ``last.pt``, or is not named as a checkpoint.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / "last.pt").is_file():
            raise CheckpointError(f"{path} is a folder without last.pt; expected a checkpoint file or a run folder "
                                  f"written by `contrastkit pretrain --out`")
        return path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"{path} is not named as a checkpoint: contrastkit checkpoints are *.pt files "
                              f"(torch.save archives of tensors); an export (.safetensors, .torchscript, .onnx) is read by "
                              f"contrastkit.export.load_encoder")
    return path


def _zip_names(path: Path) -> list[str] | None:
    """The member names of a zip archive, or None when ``path`` is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def is_torchscript_archive(names: list[str]) -> bool:
    """Whether a zip archive's member names are a TorchScript module's (its ``code/`` and ``constants.pkl``)."""
    return any("/code/" in n or n.endswith("/constants.pkl") for n in names)


def _unreadable(path: Path, exc: Exception | None) -> str:
    """Why ``path`` cannot be read as a checkpoint, in words.

    PyTorch's advice to retry with ``weights_only=False`` is left out: for a file contrastkit wrote it is never the
    fix, and it would run the file's pickled code. The previous checkpoint is named only when it exists.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    size = path.stat().st_size
    names = _zip_names(path)
    if size == 0:
        why = "it is empty (0 bytes)"
    elif head == b"PK\x03\x04" and names is None:
        why = f"it starts as a torch.save file, but its end is missing ({size} bytes)"
    elif names is None:
        why = f"its {size} bytes are not a torch.save file (a zip archive); is it another kind of file?"
    elif is_torchscript_archive(names):
        why = ("it is a TorchScript archive, which is code, not weights; contrastkit runs TorchScript only from "
               "a file named *.torchscript, through contrastkit.export.load_encoder")
    elif isinstance(exc, pickle.UnpicklingError):
        why = ("it holds Python objects other than tensors, numbers, strings and containers, which contrastkit "
               "never writes (checkpoints are loaded with weights_only=True, running no pickled code)")
    else:
        first = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
        if "weights_only" in first:
            first = ""
        why = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    prev = path.with_name(path.stem + ".prev" + path.suffix)
    hint = f"; the previous checkpoint {prev} exists and may be intact" if prev.is_file() else ""
    return f"checkpoint {path} is corrupt or truncated: {why}{hint}"


def read_torch_file(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` of a file whose bytes are checked first: a torch.save archive, not
    TorchScript (which ``torch.load`` would hand to ``torch.jit.load``).

    Raises:
        CheckpointError: naming the file and saying what it is instead, when it is empty, truncated, not a
            torch.save archive, TorchScript, or holds objects other than tensors and containers.
    """
    path = Path(path)
    names = _zip_names(path)
    if names is None or is_torchscript_archive(names):
        raise CheckpointError(_unreadable(path, None))
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated zip, bad pickle
        raise CheckpointError(_unreadable(path, exc)) from exc


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file, or a run folder (its ``last.pt``).
        map_location: where tensors are loaded.

    Raises:
        CheckpointError: naming the file, when it is missing, empty, truncated, corrupt or not a contrastkit
            checkpoint.
    """
    path = resolve_checkpoint(path)
    state = read_torch_file(path, map_location)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        plain = isinstance(state, dict) and bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())
        hint = (f"; a state_dict of an encoder that contrastkit export wrote is read with the {path.name}.json "
                f"written beside it" if plain else "")
        raise CheckpointError(f"{path} is not a contrastkit checkpoint (expected keys 'model' and 'config'){hint}")
    return state



#: the input of a checkpoint that does not record it (versions before image sizes were stored)
_DEFAULT_SIZE = 32
_DEFAULT_STAT = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about the model it holds: one typed record instead of ``meta.get(key, default)``.

    Attributes:
        path: the checkpoint file.
        kind: ``pretrain`` (a training run's checkpoint) or ``finetuned`` (:mod:`.finetuned`).
        method: the training method of the run.
        data: the data set or folder the run trained on, as recorded.
        image_size: the side of the square input.
        mean, std: the input's per-channel normalisation.
        classes: the class names of the training data (empty when unlabelled).
        preset: the augmentation preset of the run, if recorded.
        global_step: the optimiser steps taken, if recorded.
        config: the run's options as stored (a ``PretrainConfig`` dict).
        finetuned: a fine-tuned network's ``classifier`` and ``result`` records (None for a training run).
        tracking: the references of the run's tracked runs (``--tracking``; empty when untracked).
    """

    path: Path
    kind: str
    method: str
    data: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
    preset: str | None = None
    global_step: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    finetuned: dict[str, Any] | None = None
    tracking: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_state(cls, path: Path, state: dict[str, Any]) -> "CheckpointMeta":
        """The record of a loaded checkpoint dict (older versions' missing fields take their defaults)."""
        meta, config = dict(state.get("meta") or {}), dict(state.get("config") or {})
        finetuned = ({"classifier": dict(state["classifier"]), "result": dict(state.get("result") or {})}
                     if is_finetuned(state) else None)
        step = state.get("global_step")
        return cls(path=Path(path), kind="finetuned" if finetuned else "pretrain",
                   method=str(meta.get("method") or config.get("method") or "simclr"),
                   data=str(meta.get("data") or config.get("data") or ""),
                   image_size=int(meta.get("image_size") or _DEFAULT_SIZE),
                   mean=tuple(float(v) for v in meta.get("mean") or _DEFAULT_STAT),
                   std=tuple(float(v) for v in meta.get("std") or _DEFAULT_STAT),
                   classes=tuple(str(c) for c in meta.get("classes") or ()), preset=meta.get("preset"),
                   global_step=None if step is None else int(step), config=config, finetuned=finetuned,
                   tracking=dict(state.get("tracking") or {}))

    def as_dict(self) -> dict[str, Any]:
        """The ``meta`` entry a checkpoint derived from this one stores (a fine-tuned network's, an export's)."""
        return {"method": self.method, "data": self.data, "image_size": self.image_size, "mean": list(self.mean),
                "std": list(self.std), "classes": list(self.classes), "preset": self.preset,
                "encoder": self.config.get("encoder")}


def _model_for(state: dict[str, Any], meta: CheckpointMeta) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A fresh model of the checkpoint's architecture and the weights to load into it.

    The kind of model is read from the checkpoint's structure, not from its method's name: a fine-tuned network
    (its format), the student of a distillation run (weights under ``student.``), the cross-entropy baseline (a
    linear classifier as the head), or f with a projection head. A run with a momentum encoder also holds the
    momentum copy of f and g under ``momentum.`` (:class:`~contrastkit.models.MomentumModel`); the trained network
    is the rest.
    """
    arch = Architecture.from_options(meta.config)
    weights = {k: v for k, v in state["model"].items() if not k.startswith("momentum.")}
    if meta.finetuned is not None:
        info = meta.finetuned["classifier"]
        return build_model(arch, int(info["num_classes"]), meta.image_size, int(info["from_head_layer"])), weights
    if any(k.startswith("student.") for k in weights):
        weights = {k[len("student."):]: v for k, v in weights.items() if k.startswith("student.")}
        num_classes = int(weights["classifier.weight"].shape[0]) if "classifier.weight" in weights else 0
        return build_model(arch, num_classes, meta.image_size, head_layer=0), weights
    num_classes = int(weights["head.weight"].shape[0]) if "head.weight" in weights else None
    return build_model(arch, num_classes, meta.image_size), weights


def load_checkpoint_model(path: str | os.PathLike, device: str | torch.device = "cpu"
                          ) -> tuple[nn.Module, CheckpointMeta, dict[str, Any]]:
    """Rebuild the model a checkpoint holds and load its weights strictly.

    Args:
        path: a checkpoint file (a training run's ``last.pt``, a fine-tuned network) or a run folder.
        device: where the model is put.

    Returns:
        ``(model, meta, config)``: the model in eval mode (a :class:`~contrastkit.models.ContrastiveModel`, or a
        :class:`~contrastkit.models.FineTunedNetwork` for a fine-tuned network or a distillation run's student;
        both have ``.encoder``), its :class:`CheckpointMeta`, and the run's options as stored (``meta.config``).

    Raises:
        CheckpointError: the file is missing, corrupt or not a contrastkit checkpoint, or its weights do not match
            its own architecture.
    """
    path = resolve_checkpoint(path)
    state = load_checkpoint(path)
    meta = CheckpointMeta.from_state(path, state)
    model, weights = _model_for(state, meta)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match its own config's model: {exc}") from exc
    return model.to(device).eval(), meta, meta.config


def save_finetuned(path: str | os.PathLike, network: FineTunedNetwork, config: dict[str, Any],
                   meta: dict[str, Any], classes: list[str], result: dict[str, Any]) -> Path:
    """Write a fine-tuned network as a checkpoint (:func:`~.finetuned.finetuned_state`), atomically; unlike a
    training run's checkpoint, no ``.prev`` copy is kept.

    Raises:
        ValueError: ``classes`` does not have one name per output of the classifier.
        CheckpointError: the file could not be written.
    """
    path = Path(path).expanduser()
    return save_checkpoint(finetuned_state(network, config, meta, classes, result), path, keep_previous=False)
