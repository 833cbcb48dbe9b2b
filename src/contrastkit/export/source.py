"""What is being exported: a checkpoint's model, and the metadata that travels with every export."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import (CheckpointError, ContrastiveModel, HeadPrefix, ProjectionHead, load_checkpoint_model,
                      resolve_checkpoint)
from .formats import ExportError
from .shapes import dynamic_axes

__all__ = ["ExportSource", "load_source", "resolve_checkpoint", "build_metadata", "describe_head",
           "backbone_state_dict", "head_state_dict"]

#: bumped when the metadata schema changes incompatibly
METADATA_VERSION = 1


@dataclass
class ExportSource:
    """A checkpoint's model in eval mode and what is known about its input.

    Attributes:
        model: f and g, in eval mode, on the CPU, in float32.
        checkpoint: the checkpoint file it came from.
        architecture: ``resnet18``/``resnet34``/``resnet50`` or ``timm:<name>``.
        width: the ResNet width multiplier (None for timm encoders).
        stem: ``imagenet`` or ``cifar`` for the ResNets (None for timm encoders).
        image_size: the side of the square input the encoder was trained on.
        mean, std: the per-channel normalisation of its input.
        config: the run's configuration (``PretrainConfig.to_dict()``).
        meta: the checkpoint's ``meta`` dict.
    """

    model: ContrastiveModel
    checkpoint: Path
    architecture: str
    width: float | None
    stem: str | None
    image_size: int
    mean: list[float]
    std: list[float]
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def library(self) -> str:
        """The library whose model class matches the backbone: ``torchvision`` or ``timm``."""
        return "timm" if self.architecture.startswith("timm:") else "torchvision"

    @property
    def feature_dim(self) -> int:
        return int(self.model.encoder.feature_dim)

    @property
    def is_standard_torchvision(self) -> bool:
        """True when the backbone is exactly ``torchvision.models.<architecture>()`` with ``fc = Identity``."""
        return self.library == "torchvision" and self.width == 1.0 and self.stem == "imagenet"


def _check_is_archive(path: Path) -> None:
    """A contrastkit checkpoint is a torch.save zip archive; say so plainly for any other file."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(f"{path} is not a contrastkit checkpoint: checkpoints are zip archives written by "
                              f"torch.save (contrastkit pretrain's last.pt), this file starts with {magic!r}")


def _stem_of(backbone: nn.Module) -> str:
    conv1 = getattr(backbone, "conv1", None)
    return "cifar" if isinstance(conv1, nn.Conv2d) and conv1.kernel_size == (3, 3) else "imagenet"


def load_source(checkpoint: str | os.PathLike) -> ExportSource:
    """Load a contrastkit checkpoint (or run folder) for export.

    Raises:
        CheckpointError: not a contrastkit checkpoint, or its weights do not match its config's model.
    """
    path = resolve_checkpoint(checkpoint)
    _check_is_archive(path)
    model, meta, config = load_checkpoint_model(path, "cpu")
    model = model.float().eval()
    arch = str(config.get("encoder", "resnet18"))
    is_timm = arch.startswith("timm:")
    return ExportSource(
        model=model, checkpoint=path, architecture=arch,
        width=None if is_timm else float(config.get("width", 1.0)),
        stem=None if is_timm else _stem_of(model.encoder.backbone),
        image_size=meta.image_size, mean=list(meta.mean), std=list(meta.std),
        config=dict(config), meta={**meta.as_dict(), "data": meta.data},
    )


def describe_head(head: nn.Module) -> dict[str, Any]:
    """What g is, enough to rebuild it: a :class:`ProjectionHead` or the CE baseline's linear classifier."""
    if isinstance(head, ProjectionHead):
        if head.kind == "mlp":
            in_dim, hidden = head.net[0].in_features, head.net[0].out_features
        elif head.kind == "linear":
            in_dim, hidden = head.net.in_features, None
        else:  # "none": the identity
            in_dim, hidden = head.out_dim, None
        return {"class": "contrastkit.ProjectionHead", "kind": head.kind, "in_dim": int(in_dim),
                "hidden_dim": hidden, "out_dim": int(head.out_dim), "layers": int(head.num_layers)}
    if isinstance(head, nn.Linear):
        return {"class": "torch.nn.Linear", "kind": "classifier", "in_dim": head.in_features,
                "out_dim": head.out_features}
    if isinstance(head, HeadPrefix):
        raise ExportError("--include-head: this is a fine-tuned network (eval --protocol finetune --save, or "
                          "distill), whose head is the part of g it was fine-tuned from plus a classifier, not a "
                          "projection head; export it without --include-head to get f, and run the classifier "
                          "with: contrastkit eval --checkpoint FINETUNED.pt --protocol classifier")
    raise ExportError(f"cannot export a head of type {type(head).__name__}: expected a contrastkit "
                      f"ProjectionHead or the CE baseline's nn.Linear")


def build_metadata(source: ExportSource, fmt: str, include_head: bool) -> dict[str, Any]:
    """The metadata every export carries: architecture, input size trained at, normalisation, the input axes that
    take any size (``dynamic_axes``), version and the run's config."""
    import contrastkit

    meta = {
        "contrastkit_export": METADATA_VERSION,
        "export_format": fmt,
        "architecture": source.architecture,
        "library": source.library,
        "width": source.width,
        "stem": source.stem,
        "input_size": [3, source.image_size, source.image_size],
        "mean": source.mean,
        "std": source.std,
        "feature_dim": source.feature_dim,
        "contrastkit_version": contrastkit.__version__,
        "method": source.config.get("method"),
        "data": source.meta.get("data", source.config.get("data")),
        "include_head": include_head,
        "head": describe_head(source.model.head) if include_head else None,
        "dynamic_axes": dynamic_axes(fmt, source.stem, source.image_size),
        "config": source.config,
    }
    return json.loads(json.dumps(meta))  # as it reads back from JSON: tuples become lists


def head_state_dict(source: ExportSource) -> dict[str, torch.Tensor]:
    """g's weights as plain contiguous CPU tensors."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in source.model.head.state_dict().items()}


def backbone_state_dict(source: ExportSource) -> dict[str, torch.Tensor]:
    """The encoder's weights under the names of the torchvision / timm model (``backbone.`` stripped)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in source.model.encoder.backbone.state_dict().items()}
