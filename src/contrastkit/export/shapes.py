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


#: the total stride of a ResNet by stem: its last feature map is side / stride (rounded up)
_STRIDE = {"cifar": 8, "imagenet": 32}


def dynamic_axes(fmt: str, stem: str | None = None, side: int | None = None) -> list[str] | None:
    """The input axes of ``fmt``'s graph that take any size, or None (the weights formats: the module decides).

    A torch.export program traced where the last feature map is 1 x 1 (an ImageNet stem at 32 px) is specialised
    to that size (torch.export fixes every size that is 1), so its ``pt2`` export takes any batch at the trained
    image size only; ONNX keeps all three axes.
    """
    if fmt not in DYNAMIC_FORMATS:
        return None
    stride = _STRIDE["cifar" if stem == "cifar" else "imagenet"]
    if fmt == "pt2" and side is not None and -(-side // stride) <= 1:
        return [AXIS_NAMES[0]]
    return [AXIS_NAMES[i] for i in sorted(AXIS_NAMES)]


def dynamic_shapes(axes: list[str] | None = None) -> tuple[dict[int, Any]]:
    """``torch.export``'s ``dynamic_shapes`` of the encoder's one input: a named batch axis, and (when ``axes``
    holds them, or by default) height and width whose ranges torch.export derives from the network
    (``Dim.AUTO``: a ResNet needs at least its stride + 1)."""
    shapes: dict[int, Any] = {0: torch.export.Dim("batch")}
    if axes is None or "height" in axes:
        shapes.update({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO})
    return (shapes,)


def check_shapes(meta: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """(batch, side) pairs an export with dynamic axes is checked at: 1 x 32, 3 x 48, 5 x 64 px for a CIFAR stem,
    1 x 96, 3 x 160, 5 x 224 px otherwise (ImageNet stem, timm); empty for an export without them."""
    if "height" not in (meta.get("dynamic_axes") or ()):
        return ()
    return _CHECK_SHAPES["cifar" if meta.get("stem") == "cifar" else "imagenet"]


def shaped_batch(batch: int, side: int, seed: int) -> torch.Tensor:
    """A seeded normalised-input batch. Shape: (batch, 3, side, side)."""
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))
