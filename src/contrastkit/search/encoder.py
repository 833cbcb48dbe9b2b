"""The frozen encoder behind an index: a checkpoint's model, its preprocessing, and its identity.

An index stores the :attr:`FrozenEncoder.fingerprint` of the model that embedded it, a hash of
the weights that compute the exported vector (the encoder f, plus the head g for z) and of the
preprocessing (image size, mean, std) and of what is exported. A query embedded by any other
model or preprocessing has another fingerprint and is refused, since its vector would live in
another space.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models import load_checkpoint_model, resolve_checkpoint

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


def load_frozen_encoder(checkpoint: str | os.PathLike, projection: bool = False) -> FrozenEncoder:
    """Load a checkpoint written by ``pretrain`` as a :class:`FrozenEncoder` on the CPU.

    Args:
        checkpoint: a ``last.pt``, or a run folder holding one.
        projection: export z = g(h) instead of h.

    Raises:
        CheckpointError: a missing, corrupt or mismatched checkpoint.
    """
    path = resolve_checkpoint(checkpoint)
    model, meta, _ = load_checkpoint_model(path, "cpu")
    module: nn.Module = _Projected(model.encoder, model.head) if projection else model.encoder
    module.eval()
    what = "z" if projection else "h"
    return FrozenEncoder(module, meta.image_size, meta.mean, meta.std, what, str(path.resolve()),  # type: ignore[arg-type]
                         fingerprint_of(module, meta.image_size, meta.mean, meta.std, what), list(meta.classes),
                         meta.data, meta.global_step)
