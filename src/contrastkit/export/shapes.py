"""The input shapes of the graph exports: which axes take any size, and the shapes each export is checked at.

The ONNX and ``torch.export`` graphs take any batch, height and width (``dynamic_axes``); the metadata's
``input_size`` stays the size the encoder was trained at, which is what its features are meant for. An export
with dynamic axes is checked against contrastkit's h at :func:`check_shapes` besides the trained size: three
batch sizes and three image sides, larger for an ImageNet stem (stride 32) than for a CIFAR stem (stride 8).
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["DYNAMIC_FORMATS", "AXIS_NAMES", "dynamic_axes", "dynamic_shapes", "check_shapes", "shaped_batch"]

#: the formats whose graph takes any batch, height and width
DYNAMIC_FORMATS = ("onnx", "pt2")
#: the names of the dynamic axes of the input (N, 3, H, W)
AXIS_NAMES = {0: "batch", 2: "height", 3: "width"}
#: (batch, side) pairs an export with dynamic axes is checked at, by stem
_CHECK_SHAPES = {"cifar": ((1, 32), (3, 48), (5, 64)), "imagenet": ((1, 96), (3, 160), (5, 224))}


def dynamic_axes(fmt: str) -> list[str] | None:
    """The input axes of ``fmt``'s graph that take any size, or None (the weights formats: the module decides)."""
    return [AXIS_NAMES[i] for i in sorted(AXIS_NAMES)] if fmt in DYNAMIC_FORMATS else None


def dynamic_shapes() -> tuple[dict[int, Any]]:
    """``torch.export``'s ``dynamic_shapes`` of the encoder's one input: a named batch axis, and height and width
    whose ranges torch.export derives from the network (``Dim.AUTO``: a ResNet needs at least its stride + 1)."""
    return ({0: torch.export.Dim("batch"), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},)


def check_shapes(meta: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """(batch, side) pairs an export with dynamic axes is checked at: 1 x 32, 3 x 48, 5 x 64 px for a CIFAR stem,
    1 x 96, 3 x 160, 5 x 224 px otherwise (ImageNet stem, timm); empty for an export without them."""
    if not meta.get("dynamic_axes"):
        return ()
    return _CHECK_SHAPES["cifar" if meta.get("stem") == "cifar" else "imagenet"]


def shaped_batch(batch: int, side: int, seed: int) -> torch.Tensor:
    """A seeded normalised-input batch. Shape: (batch, 3, side, side)."""
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))
