"""The near-duplicate vector of an image: h averaged over a few slightly moved views of it.

A near-duplicate is often a little moved or trimmed (a crop, a shift, a rotation); an encoder trained
for minutes is far from invariant to that. Averaging h over the image, four copies moved diagonally
by 1/16 of the side (edges repeated), and its central 90% scaled back up, makes the vector of an
image and of its moved copy share most of their views. On CIFAR-10 with a 3-minute encoder this
raised the recall of crops from 0.54 to 0.80 and of shifts from 0.35 to 0.88, scored as
:mod:`.dup_space` scores them, at the same false-link rate (benchmarks/README.md, "Near-duplicates
against a ground truth", the ablation). It costs five more forward passes per image when an index
is built; searching uses h of the image alone, as before.

Views are made from the preprocessed (N, 3, S, S) batch, so they scale with the encoder's input side.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["near_duplicate_views", "view_mean", "VIEW_COUNT"]

#: Views averaged: the image, four diagonal shifts, the central crop.
VIEW_COUNT = 6
_SHIFT = 1 / 16
_CROP = 0.9


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x moved by (dy, dx) pixels, the uncovered border filled by the edge pixels. Shape: (N, C, S, S) kept."""
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p), mode="replicate")  # (N, C, S + 2p, S + 2p)
    s_h, s_w = x.shape[2:]
    return padded[:, :, p - dy:p - dy + s_h, p - dx:p - dx + s_w]


def near_duplicate_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The views of a preprocessed batch whose h are averaged (see the module docstring).

    Shape:
        x (N, 3, S, S) -> VIEW_COUNT tensors (N, 3, S, S).
    """
    if x.dim() != 4:
        raise ValueError(f"views need a batch of shape (N, 3, S, S), got {tuple(x.shape)}")
    side = x.shape[2]
    d = max(1, round(side * _SHIFT))
    c = max(1, round(side * _CROP))
    top = (side - c) // 2
    crop = F.interpolate(x[:, :, top:top + c, top:top + c], size=tuple(x.shape[2:]), mode="bilinear",
                         align_corners=False, antialias=True)  # (N, 3, S, S)
    return [x, *(_shift(x, sy * d, sx * d) for sy in (-1, 1) for sx in (-1, 1)), crop]


@torch.no_grad()
def view_mean(module: nn.Module, x: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of ``module`` over the views of ``x``; ``first`` is ``module(x)`` when already computed.

    Shape:
        x (N, 3, S, S) -> (N, D) float32.
    """
    views = near_duplicate_views(x)
    total = (first if first is not None else module(views[0])).float()
    for v in views[1:]:
        total = total + module(v).float()
    return total / len(views)  # (N, D)
