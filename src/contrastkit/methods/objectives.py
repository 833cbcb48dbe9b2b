"""Objectives that turn the model's outputs for a batch into a loss: ``objective(outputs, labels) -> loss``.

``outputs`` is (N, V, D): the V views of each of the N images, view-major in the forward pass and regrouped per
image by :func:`~contrastkit.train.forward.forward_views`. Gradient caching (:mod:`contrastkit.train.gradcache`)
calls the same objective on cached outputs. Non-finite outputs give a non-finite loss, which the training loop's
one guard handles (:mod:`contrastkit.train.nonfinite`); the losses are built with ``check_values=False`` so that
they read nothing back from the device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PairObjective", "ViewsObjective", "CrossEntropyObjective"]


class PairObjective(nn.Module):
    """A loss of two views, ``loss(z1, z2)`` (NT-Xent with V = 2 and the comparison losses of SimCLR Table 4).

    Shape:
        outputs (N, 2, D) -> scalar; labels unused.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.loss(outputs[:, 0], outputs[:, 1])


class ViewsObjective(nn.Module):
    """A loss over any number of views, ``loss(outputs, labels)`` (SupCon; NT-Xent with V > 2).

    Args:
        loss: takes (N, V, D) and labels (N,) or None.
        use_labels: pass the labels (SupCon); False: every image is its own class (SimCLR).

    Shape:
        outputs (N, V, D), labels (N,) -> scalar.
    """

    def __init__(self, loss: nn.Module, use_labels: bool) -> None:
        super().__init__()
        self.loss = loss
        self.use_labels = use_labels

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.loss(outputs, labels if self.use_labels else None)


class CrossEntropyObjective(nn.Module):
    """Cross-entropy of the logits of every view against its image's label (the supervised baseline).

    Shape:
        outputs (N, V, C) logits, labels (N,) -> scalar.
    """

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n, v, c = outputs.shape
        return F.cross_entropy(outputs.reshape(n * v, c).float(), labels[:, None].expand(n, v).reshape(n * v))
