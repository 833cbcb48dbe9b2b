"""Class-balanced label subsets for few-label experiments (SimCLR Sec. 6, App. B.5).

SimCLR fine-tunes on 1% and 10% of the ImageNet labels, sampled in a
class-balanced way. :func:`class_balanced_subset` does the same for any label
vector: each class c with n_c samples contributes ``max(1, round(fraction * n_c))``
of them (rounding half up), drawn uniformly without replacement with a seeded
generator. The indices are returned sorted, so the subset is a deterministic
function of (labels, fraction, seed) and can be recorded in a results file.

:func:`dataset_labels` reads the label vector of a data set without decoding
images when it can (``.targets`` / ``.labels`` attributes, ``Subset`` chains).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from .labels import as_labels

__all__ = ["class_balanced_subset", "dataset_labels"]


def class_balanced_subset(labels: Any, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of a class-balanced random subset.

    Args:
        labels: class index of every sample (tensor, array or sequence).
        fraction: share of each class to keep, in (0, 1].
        seed: seed of the sampling generator (same seed, same indices).

    Returns:
        Sorted int64 indices into ``labels``; class c contributes
        ``max(1, floor(fraction * n_c + 0.5))`` of its n_c samples.

    Raises:
        TypeError: if labels are not integers or fraction is not a number.
        ValueError: if labels are not 1-D / empty / negative, or fraction is
            not in (0, 1].

    Shape:
        labels (N,) -> indices (n_subset,).
    """
    y = as_labels("labels", labels).cpu()
    if y.numel() == 0:
        raise ValueError("labels is empty: expected at least one sample")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(f"fraction must be a number in (0, 1], got {type(fraction).__name__}")
    if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    generator = torch.Generator().manual_seed(seed)
    chosen: list[torch.Tensor] = []
    for c in torch.unique(y).tolist():  # sorted class order keeps the draw deterministic
        members = torch.nonzero(y == c, as_tuple=False).squeeze(1)  # (n_c,)
        n_keep = max(1, math.floor(fraction * members.numel() + 0.5))
        perm = torch.randperm(members.numel(), generator=generator)  # (n_c,)
        chosen.append(members[perm[:n_keep]])
    return torch.sort(torch.cat(chosen)).values


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The label of every sample of a data set, as an int64 tensor.

    Uses ``dataset.targets`` or ``dataset.labels`` when present (torchvision
    data sets), follows ``torch.utils.data.Subset`` chains, and otherwise reads
    ``dataset[i][1]`` for every i (which decodes every image).

    Args:
        dataset: a data set yielding ``(image, int label)``.

    Returns:
        int64 tensor of labels.

    Raises:
        TypeError: if the data set has no length or its labels are not integers.

    Shape:
        -> (N,).
    """
    if isinstance(dataset, Subset):
        parent = dataset_labels(dataset.dataset)
        return parent[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    for attr in ("targets", "labels"):
        values = getattr(dataset, attr, None)
        if values is not None and not callable(values):
            return as_labels(f"dataset.{attr}", torch.as_tensor(values))
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(f"dataset must have a length, got {type(dataset).__name__}") from exc
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    return as_labels("dataset labels", torch.stack([torch.as_tensor(dataset[i][1]) for i in range(n)]))
