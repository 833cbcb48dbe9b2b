"""Boundary validation shared by the evaluation protocols (private).

Every public function of :mod:`contrastkit.evaluate` validates its inputs with
these helpers, so the error messages read the same everywhere: what was received
and what is expected.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

# One number check (a finite real > 0, or >= 0) for the losses and the evaluation protocols, one device rule for all
from ..data.labels import as_tensor, as_labels
from ..runtime import resolve_device
from ..losses._validation import check_positive_float

__all__ = [
    "as_features",
    "as_labels",
    "as_train_test",
    "check_positive_int",
    "check_positive_float",
    "infer_num_classes",
    "resolve_device",
]


def as_features(name: str, x: Any, *, allow_empty: bool = False) -> torch.Tensor:
    """Check a feature matrix and return it as a float32 CPU/device-preserving tensor.

    Args:
        name: argument name used in error messages.
        x: tensor or array of shape (N, F).
        allow_empty: accept N == 0.

    Returns:
        The features as a float32 tensor (same device as ``x`` for tensors).

    Raises:
        TypeError: if ``x`` is not a tensor/array or is not floating point.
        ValueError: if ``x`` is not 2-D, is empty, or has non-finite entries.

    Shape:
        x (N, F) -> (N, F).
    """
    t = as_tensor(name, x)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (N, F), got shape {tuple(t.shape)}")
    if t.shape[1] == 0 or (t.shape[0] == 0 and not allow_empty):
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        raise ValueError(f"{name} has non-finite values (NaN or inf) in {bad} of {t.shape[0]} rows")
    return t.float()


def as_train_test(
    train_feats: Any, train_labels: Any, test_feats: Any, test_labels: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check a train / test split of features and labels, as :func:`as_features` and :func:`as_labels` do.

    Returns:
        ``(train_feats, train_labels, test_feats, test_labels)``: float32 features, int64 labels.

    Raises:
        TypeError, ValueError: as :func:`as_features` and :func:`as_labels`; ValueError
            also when the train and test features differ in dimension F.

    Shape:
        train_feats (N, F), train_labels (N,), test_feats (M, F), test_labels (M,).
    """
    x_train = as_features("train_feats", train_feats)
    x_test = as_features("test_feats", test_feats)
    y_train = as_labels("train_labels", train_labels, x_train.shape[0], n_name="train_feats")
    y_test = as_labels("test_labels", test_labels, x_test.shape[0], n_name="test_feats")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"train_feats has F={x_train.shape[1]} but test_feats has F={x_test.shape[1]}; expected the same dimension"
        )
    return x_train, y_train, x_test, y_test


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``; raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def infer_num_classes(num_classes: int | None, *label_sets: torch.Tensor, names: Sequence[str]) -> int:
    """Return ``num_classes`` (checked against the labels) or ``max label + 1``."""
    observed = max((int(y.max()) + 1 for y in label_sets if y.numel()), default=0)
    if num_classes is None:
        return max(observed, 1)
    num_classes = check_positive_int("num_classes", num_classes)
    if observed > num_classes:
        raise ValueError(
            f"num_classes={num_classes} but {' / '.join(names)} contain label {observed - 1}; "
            f"labels must lie in [0, {num_classes - 1}]"
        )
    return num_classes
