"""The frozen-feature protocols (``knn``, ``linear``, ``retrieval``) on features already extracted, and the
evaluation data they are extracted from: what scoring a checkpoint and scoring an export share."""
from __future__ import annotations

from typing import Any

import torch

from ..data import EvalDataset, array_cache_key, decode_to_array, load_dataset
from .knn import knn_accuracy
from .linear import linear_eval
from .retrieval import retrieval_metrics

__all__ = ["FROZEN_PROTOCOLS", "evaluation_data", "score_features"]

#: the protocols that score frozen features h (or z) of the train and test splits
FROZEN_PROTOCOLS = ("knn", "linear", "retrieval")


def evaluation_data(data: str, image_size: int, mean, std, data_root: str = "~/.cache/contrastkit/datasets",
                    seed: int = 0, num_workers: int = 2) -> dict[str, Any]:
    """Train and test splits of ``data`` decoded at a checkpoint's input size and normalised with its
    statistics, as EvalDatasets (``train``, ``test``), with their labels and class count."""
    splits = load_dataset(data, root=data_root, seed=seed)
    if not splits.labelled or splits.test is None:
        raise ValueError(f"evaluation needs labelled train and test splits; {data} has none (a folder of "
                         f"multi-labelled images is scored by --protocol retrieval --labels FILE.csv)")
    size = int(image_size)
    tr = decode_to_array(splits.train, size, num_workers=num_workers, cache_key=array_cache_key(data, "train"))
    te = decode_to_array(splits.test, size, num_workers=num_workers, cache_key=array_cache_key(data, "test"))
    return {
        "splits": splits,
        "train": EvalDataset(*tr, mean=mean, std=std),
        "test": EvalDataset(*te, mean=mean, std=std),
        "train_labels": tr[1], "test_labels": te[1], "num_classes": splits.num_classes, "image_size": size,
    }


def score_features(protocol: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                   *, epochs: int | None = None, seed: int = 0, device: torch.device | str = "cpu",
                   knn_k: int = 200) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics, recipe)`` of a frozen-feature protocol: ``knn`` (k = ``knn_k``, cosine, vote temperature 0.1,
    the train split as memory), ``linear`` (a probe of ``epochs``, default 100) or ``retrieval`` (test split,
    leave-one-out).

    Shape:
        train, test: (features (N, D), labels (N,)) each.
    """
    (ftr, ltr), (fte, lte) = train, test
    if protocol == "knn":
        metrics = knn_accuracy(ftr, ltr, fte, lte, k=knn_k, temperature=0.1)
        return metrics, {"k": knn_k, "temperature": 0.1, "similarity": "cosine", "memory": "train split"}
    if protocol == "linear":
        metrics = linear_eval(ftr, ltr, fte, lte, epochs=epochs or 100, seed=seed, device=torch.device(device))
        return metrics, metrics.pop("recipe", {})
    if protocol == "retrieval":
        # Recall@K for K in 1, 2, 4, 8 where the split has that many other images for each query.
        ks = [k for k in (1, 2, 4, 8) if k <= fte.shape[0] - 1]
        if not ks:
            raise ValueError(f"retrieval scores each test image against the others: it needs at least 2 test "
                             f"images, got {fte.shape[0]}")
        metrics = retrieval_metrics(fte, lte, ks=ks, seed=seed)
        return metrics, {"queries": "test split, leave-one-out", "similarity": "cosine", "ks": ks}
    raise ValueError(f"{protocol!r} is not a frozen-feature protocol ({', '.join(FROZEN_PROTOCOLS)})")
