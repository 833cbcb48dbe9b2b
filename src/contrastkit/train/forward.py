"""The forward pass of a batch of views, shared by the training step and gradient caching."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from .precision import upcast

__all__ = ["forward_views"]


def forward_views(model: nn.Module, views: torch.Tensor, channels_last: bool = False,
                  autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> torch.Tensor:
    """The model's outputs for every view, grouped per image, in float32 for the loss.

    The V views of the N images go through the model as one batch, view-major (all first views, then all second
    views), so that BatchNorm normalises each view position over the batch as SimCLR's per-view forward does.

    Args:
        model: returns ``(h, outputs)`` for an image batch (a ContrastiveModel, possibly wrapped).
        views: the batch's views.
        channels_last: pass the images in the channels_last memory format.
        autocast: factory of the forward pass's autocast context (bf16 / fp16), or a no-op.

    Shape:
        views (N, V, C, H, W) -> outputs (N, V, D).
    """
    n, v = views.shape[:2]
    x = views.transpose(0, 1).reshape(v * n, *views.shape[2:])  # (V*N, C, H, W), view-major
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast():
        _, out = model(x)  # (V*N, D)
    return upcast(out).view(v, n, -1).transpose(0, 1)  # (N, V, D)
