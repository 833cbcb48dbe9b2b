"""Checking a vector of class labels (shared by the label subsets and the evaluation protocols)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_labels", "as_tensor"]


def as_tensor(name: str, x: Any) -> torch.Tensor:
    """``x`` (a tensor, numpy array, list or tuple) as a tensor; ``name`` is for the error message."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, (list, tuple)):
        return torch.as_tensor(x)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def as_labels(name: str, y: Any, n: int | None = None, *, n_name: str = "features") -> torch.Tensor:
    """Check a label vector and return it as a long tensor.

    Args:
        name: argument name used in error messages.
        y: integer tensor, array or sequence of shape (N,).
        n: expected length (the number of feature rows), or None.
        n_name: name of the tensor that fixes ``n``, for the message.

    Returns:
        The labels as an int64 tensor.

    Raises:
        TypeError: if the labels are not integers.
        ValueError: if the shape is not (n,) or a label is negative.

    Shape:
        y (N,) -> (N,).
    """
    t = as_tensor(name, y)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must have shape (N,), got shape {tuple(t.shape)}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has shape {tuple(t.shape)} but {n_name} has N={n} samples")
    t = t.long()
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must be non-negative class indices, got minimum {int(t.min())}")
    return t
