"""Retrieval against label sets: ``contrastkit eval --protocol retrieval --labels FILE.csv``.

A multi-label run (``--method supcon-multilabel``) trains on a folder of images with a CSV of their label sets
(:func:`contrastkit.data.read_label_csv`). It has no classes, so kNN, the linear probe and fine-tuning do not apply;
its embedding is scored as metric learning scores retrieval. Every image of the folder queries all the others
(leave-one-out), and an image is relevant to a query when the two share a label: Recall@K, MAP@R and R-precision
(:func:`~contrastkit.evaluate.retrieval_metrics` with multi-hot labels). Images without a label are references
but not queries. Any checkpoint or folder works, so a SimCLR encoder can be scored on the same label sets.
"""
from __future__ import annotations

from typing import Any

import torch

from ..data import EvalDataset, array_cache_key, decode_to_array, load_dataset, read_label_csv
from .features import extract_features
from .retrieval import retrieval_metrics

__all__ = ["label_set_data", "score_label_sets"]


def label_set_data(data: str, labels: str, image_size: int, mean, std,
                   data_root: str = "~/.cache/contrastkit/datasets", seed: int = 0,
                   num_workers: int = 2) -> dict[str, Any]:
    """Every image of ``data`` (the split it trains on) decoded at a checkpoint's input size and normalised with
    its statistics, with the label sets of ``labels`` (a CSV file: columns path, relative to ``data``, and labels,
    names separated by ``;``).

    Returns:
        ``{"images": EvalDataset, "label_sets": (N, C) float32 multi-hot, "label_names": [C names]}``.

    Raises:
        ValueError: a data set without image files, or a labels file that does not fit them (naming the file
            and the rows, as pretraining does).
    """
    splits = load_dataset(data, root=data_root, seed=seed)
    if not splits.train_paths:
        raise ValueError(f"--labels gives label sets to the image files of a folder, but {data} has no image files "
                         f"listed (a torchvision data set has classes: evaluate it without --labels)")
    label_sets, names = read_label_csv(labels, data, splits.train_paths)  # (N, C)
    images, _ = decode_to_array(splits.train, int(image_size), num_workers=num_workers,
                                cache_key=array_cache_key(data, "train"))
    dummy = torch.zeros(images.shape[0], dtype=torch.long)  # EvalDataset yields (image, label) pairs
    return {"images": EvalDataset(images, dummy, mean=mean, std=std), "label_sets": label_sets,
            "label_names": names}


def score_label_sets(encoder: torch.nn.Module, data: dict[str, Any], *, use_projection: bool = False,
                     device: torch.device | str = "cpu", seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics, recipe)`` of leave-one-out retrieval over ``data`` (from :func:`label_set_data`) on the features
    of ``encoder`` (h; z of a model with ``.encoder`` and ``.head`` with ``use_projection``): Recall@K for K in 1,
    2, 4, 8 where the folder has that many other images, MAP@R and R-precision, with ``n_images``,
    ``n_labelled`` (images with a label) and ``n_labels``.

    Shape:
        label sets (N, C), features (N, D).
    """
    feats, _ = extract_features(encoder, data["images"], batch_size=512, device=device,
                                use_projection=use_projection)  # (N, D)
    label_sets = data["label_sets"]  # (N, C)
    n = feats.shape[0]
    ks = [k for k in (1, 2, 4, 8) if k <= n - 1]
    if not ks:
        raise ValueError(f"retrieval scores each image against the others: it needs at least 2 images, got {n}")
    metrics = retrieval_metrics(feats, label_sets, ks=ks, nmi=False, seed=seed)
    metrics.update(n_images=n, n_labelled=int((label_sets.sum(dim=1) > 0).sum()), n_labels=int(label_sets.shape[1]))
    recipe = {"queries": "every image with a label, leave-one-out over the folder", "similarity": "cosine",
              "relevant": "shares a label with the query", "ks": ks, "label_names": list(data["label_names"])}
    return metrics, recipe
