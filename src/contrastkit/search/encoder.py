"""The frozen encoder behind an index: a checkpoint's (or an export's) model, its preprocessing, and its identity.

:func:`load_frozen_encoder` reads a checkpoint written by ``pretrain`` (or its run folder), and every export that
:func:`contrastkit.load_encoder` reads (safetensors, a torchvision or timm state_dict with its sidecar,
TorchScript, ONNX, pt2, a hub folder), through ``load_encoder`` itself: the encoder it returns and the
preprocessing of its transform (input side, mean, std). An export holds f only, so it gives h, not z.

An index stores the :attr:`FrozenEncoder.fingerprint` of the model that embedded it, a hash of
the weights that compute the exported vector (the encoder f, plus the head g for z) and of the
preprocessing (image size, mean, std) and of what is exported. A query embedded by any other
model or preprocessing has another fingerprint and is refused, since its vector would live in
another space. An export that keeps f's weights under their own names (safetensors, torchvision, hub,
TorchScript, pt2) has its checkpoint's fingerprint, so an index built with one is searched with the
other; an ONNX graph has no weights to hash as PyTorch names them, and its fingerprint hashes the file.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms

from ..export.loading import load_encoder
from ..export.program import ExportedEncoder
from ..export.transform import ResizeCenterCrop
from ..models import CHECKPOINT_SUFFIXES, load_checkpoint_model, read_torch_file, resolve_checkpoint

__all__ = ["FrozenEncoder", "load_frozen_encoder", "fingerprint_of"]


def fingerprint_of(module: nn.Module, image_size: int, mean, std, what: str) -> str:
    """A hex SHA-256 of a module's state (names, shapes, dtypes, values) and the preprocessing."""
    h = hashlib.sha256(f"what={what};size={image_size};mean={list(map(float, mean))};"
                       f"std={list(map(float, std))}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class FrozenEncoder:
    """A model in eval mode mapping preprocessed images to h (or z), with what it needs to preprocess.

    Attributes:
        module: maps (N, 3, S, S) normalised images to (N, D).
        image_size: S, the checkpoint's input side.
        mean, std: per-channel normalisation of the checkpoint's training data.
        what: ``"h"`` (representation) or ``"z"`` (projection).
        checkpoint: the checkpoint file it came from (absolute).
        fingerprint: see :func:`fingerprint_of`.
        classes: the checkpoint's class names (empty when trained unlabelled).
        data: the data set or folder the checkpoint was trained on.
        step: the checkpoint's training step (global_step), when it records one.
    """

    module: nn.Module
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    what: str
    checkpoint: str
    fingerprint: str
    classes: list[str]
    data: str = ""
    step: int | None = None

    def to(self, device: torch.device) -> "FrozenEncoder":
        self.module.to(device)
        return self


class _Projected(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # (N, D)


def _holds_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a run folder or a ``*.pt`` / ``*.pth`` checkpoint of ``pretrain`` (else: an export, or
    nothing, for :func:`contrastkit.load_encoder` to read or refuse). A ``.pt`` file is opened (memory-mapped,
    ``weights_only``) to tell a checkpoint from a torchvision or timm state_dict."""
    if path.is_dir():
        return (path / "last.pt").is_file() and not (path / "config.json").is_file()
    if not path.is_file() or path.suffix not in CHECKPOINT_SUFFIXES:
        return False
    state = read_torch_file(path, mmap=True)
    return isinstance(state, dict) and "model" in state and "config" in state


def _file_digest(path: Path) -> str:
    """A SHA-256 of a file's bytes, or of a folder's files (names and bytes, sorted)."""
    h = hashlib.sha256()
    for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        h.update(f"{file.relative_to(path) if file != path else file.name}\0".encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _from_export(path: Path) -> FrozenEncoder:
    """An export read by :func:`contrastkit.load_encoder`, as a :class:`FrozenEncoder` of h."""
    module, transform = load_encoder(path)
    steps = {type(t): t for t in getattr(transform, "transforms", [])}
    crop, norm = steps[ResizeCenterCrop], steps[transforms.Normalize]
    size, mean, std = int(crop.size), tuple(map(float, norm.mean)), tuple(map(float, norm.std))
    weights = module.program if isinstance(module, ExportedEncoder) else module  # pt2: the program's own names
    if weights.state_dict():
        fingerprint = fingerprint_of(weights, size, mean, std, "h")
    else:  # ONNX: the graph's weights are not PyTorch's; the file is the model
        fingerprint = hashlib.sha256(f"what=h;size={size};mean={list(mean)};std={list(std)};"
                                     f"file={_file_digest(path)}".encode()).hexdigest()
    resolved = path.resolve()
    return FrozenEncoder(module, size, mean, std, "h", str(resolved), fingerprint, [], "", None)  # type: ignore


def load_frozen_encoder(checkpoint: str | os.PathLike, projection: bool = False) -> FrozenEncoder:
    """Load a checkpoint written by ``pretrain``, or any export :func:`contrastkit.load_encoder` reads, as a
    :class:`FrozenEncoder` on the CPU.

    Args:
        checkpoint: a ``last.pt`` (or a run folder holding one), or an export: ``*.safetensors``,
            ``*.torchscript``, ``*.onnx``, ``*.pt2``, a hub folder, a torchvision or timm state_dict with its
            ``.json`` sidecar.
        projection: export z = g(h) instead of h (a checkpoint only: an export holds f).

    Raises:
        CheckpointError: a corrupt or mismatched checkpoint.
        ExportError: a file that is neither a checkpoint nor an export ``load_encoder`` reads (its message says
            what the file is and what was expected), or an optional package it needs is missing.
        ValueError: ``projection`` with an export.
    """
    path = Path(os.path.expanduser(os.fspath(checkpoint)))
    if not _holds_checkpoint(path):
        if projection:
            raise ValueError(f"--projection indexes z = g(h), which needs the projection head g of the checkpoint "
                             f"written by pretrain; {path} is an export of the encoder f: index h (leave out "
                             f"--projection), or pass the checkpoint it was exported from")
        return _from_export(path)
    path = resolve_checkpoint(path)
    model, meta, _ = load_checkpoint_model(path, "cpu")
    module: nn.Module = _Projected(model.encoder, model.head) if projection else model.encoder
    module.eval()
    what = "z" if projection else "h"
    return FrozenEncoder(module, meta.image_size, meta.mean, meta.std, what, str(path.resolve()),  # type: ignore[arg-type]
                         fingerprint_of(module, meta.image_size, meta.mean, meta.std, what), list(meta.classes),
                         meta.data, meta.global_step)
