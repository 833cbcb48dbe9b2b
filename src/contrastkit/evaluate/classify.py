"""Top-1 / top-5 accuracy of a classifier network (logits out) on a labelled data set."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from ._checks import as_labels, check_positive_int
from .features import extract_features

__all__ = ["classifier_accuracy"]


def classifier_accuracy(network: nn.Module, dataset: Dataset, num_classes: int, batch_size: int = 256,
                        device: str | torch.device = "cpu", num_workers: int = 0,
                        autocast: bool = False) -> dict[str, float | int]:
    """Score a network's own predictions (eval mode, in order, no augmentation).

    Args:
        network: maps images (B, 3, H, W) to logits (B, C).
        dataset: yields ``(image, int label)``.
        num_classes: C (>= 2); labels must lie in [0, C).
        batch_size, device, num_workers, autocast: as :func:`~contrastkit.evaluate.extract_features`.

    Returns:
        ``{"top1": float, "top5": float | None, "n_test": int}``; top-5 is None with 5 classes or fewer
        (every prediction would be a hit).

    Raises:
        ValueError: logits of the wrong width, or a label outside [0, C).

    Shape:
        images (B, 3, H, W) -> logits (B, C).
    """
    num_classes = check_positive_int("num_classes", num_classes, minimum=2)
    # extract_features returns h for a module with .encoder and .head; a Sequential around the network
    # makes it return the network's own output, the logits.
    logits, labels = extract_features(nn.Sequential(network), dataset, batch_size=batch_size, device=device,
                                      num_workers=num_workers, autocast=autocast)  # (M, C), (M,)
    labels = as_labels("dataset labels", labels)
    if logits.shape[1] != num_classes:
        raise ValueError(f"the network returns {logits.shape[1]} logits per image but num_classes={num_classes}")
    if int(labels.max()) >= num_classes:
        raise ValueError(f"the data set has label {int(labels.max())} but num_classes={num_classes}; labels "
                         f"must lie in [0, {num_classes - 1}]")
    ranked = logits.topk(min(5, num_classes), dim=1).indices  # (M, 5)
    top1 = float((ranked[:, 0] == labels).float().mean())
    top5 = float((ranked == labels[:, None]).any(dim=1).float().mean()) if num_classes > 5 else None
    return {"top1": top1, "top5": top5, "n_test": int(labels.numel())}
