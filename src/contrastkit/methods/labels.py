"""The training labels of the methods that use class labels (SupCon, the cross-entropy baseline)."""
from __future__ import annotations

import torch

from ..data import class_balanced_subset
from .base import DataInfo

__all__ = ["unlabelled", "class_labels"]


def unlabelled(data: DataInfo) -> torch.Tensor:
    """Every image its own class (-1): SimCLR's views of one image are its only positives."""
    return torch.full((len(data.targets),), -1, dtype=torch.long)


def class_labels(method: str, data: DataInfo, fraction: float = 1.0, seed: int = 0) -> torch.Tensor:
    """The class label of every training image; with ``fraction`` < 1, a seeded class-balanced subset keeps its
    labels and the rest are -1 (SupCon's partly labelled training).

    Raises:
        ValueError: the training data hold unlabelled images, or fewer than two classes (a labelled method
            would then have nothing to tell apart: its loss is 0 and it learns nothing).
    """
    labels = torch.as_tensor(data.targets, dtype=torch.long)
    if (labels < 0).any():
        raise ValueError(f"--method {method} needs labels, but the training data hold {int((labels < 0).sum())} "
                         f"unlabelled images (use --method simclr, or a folder with one subfolder per class)")
    present = torch.unique(labels)
    if present.numel() < 2:
        names = [data.classes[int(c)] for c in present] if data.classes else present.tolist()
        raise ValueError(f"--method {method} needs at least two classes to tell apart, but the training data of "
                         f"{data.data} hold {present.numel()} ({names}); use --method simclr, or data with more "
                         f"classes")
    if fraction >= 1:
        return labels
    keep = class_balanced_subset(labels, fraction, seed=seed)
    partial = torch.full_like(labels, -1)
    partial[keep] = labels[keep]
    return partial
