"""Class-balanced subsets of a data set, materialised as an image folder.

The ``cpu`` budget trains on 500 images per class of CIFAR-10 rather than
50,000 images: on two CPU cores a full epoch of even a small ResNet takes
about a quarter of an hour. The subset is a folder in the ImageFolder layout
(``train/<class>/``, ``test/<class>/``) that every part of contrastkit reads
like any other ``--data`` folder: symbolic links to the files of a folder
source, PNG files for a named source (``digits``, ``cifar10``...).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..data import load_dataset

__all__ = ["subset_folder", "materialise_subset", "SUBSET_ROOT"]

#: Where subsets are written (shared between experiments, so decoded arrays are cached once);
#: the environment variable ``CONTRASTKIT_SUBSET_ROOT`` overrides it.
SUBSET_ROOT = "~/.cache/contrastkit/subsets"


def _root(root: str | None) -> str:
    return os.path.expanduser(root or os.environ.get("CONTRASTKIT_SUBSET_ROOT") or SUBSET_ROOT)


def _source_id(data: str) -> str:
    if data in ("digits", "cifar10", "cifar100", "stl10"):
        return data
    return os.path.abspath(os.path.expanduser(data))


def subset_folder(data: str, train_per_class: int | None, test_per_class: int | None, seed: int = 0,
                  root: str | None = None) -> str:
    """The folder that :func:`materialise_subset` writes for these arguments (nothing is written).

    Returns ``data`` itself when both counts are None (no subset).
    """
    if train_per_class is None and test_per_class is None:
        return data
    source = _source_id(data)
    digest = hashlib.sha1(f"{source}|{train_per_class}|{test_per_class}|{seed}".encode()).hexdigest()[:10]
    stem = Path(source).name or "data"
    return os.path.join(_root(root), f"{stem}-{train_per_class}x{test_per_class}-s{seed}-{digest}")


def _pick(labels: list[int], per_class: int | None, rng: np.random.Generator) -> list[int]:
    """Indices of a class-balanced subset: the first ``per_class`` of a seeded permutation of each class."""
    labels_arr = np.asarray(labels)
    chosen: list[int] = []
    for c in sorted(set(labels_arr.tolist())):
        idx = np.flatnonzero(labels_arr == c)
        idx = idx[rng.permutation(len(idx))]
        chosen.extend(sorted(idx[: per_class if per_class is not None else len(idx)].tolist()))
    return chosen


def materialise_subset(data: str, train_per_class: int | None, test_per_class: int | None, seed: int = 0,
                       root: str | None = None, data_root: str = "~/.cache/contrastkit/datasets") -> str:
    """Write (once) a class-balanced subset of ``data`` as an image folder and return its path.

    A folder that is already complete (its ``subset.json`` exists) is reused.

    Args:
        data: a data set name or folder accepted by :func:`contrastkit.data.load_dataset`.
        train_per_class: images per class kept from the training split (None: all).
        test_per_class: images per class kept from the test split (None: all).
        seed: seed of the selection.
        root: where subsets are written (default: ``$CONTRASTKIT_SUBSET_ROOT`` or :data:`SUBSET_ROOT`).
        data_root: torchvision data root for named data sets.

    Returns:
        The subset folder (or ``data`` itself when both counts are None).

    Raises:
        ValueError: a count < 1, or data without labels and a test split.
    """
    for name, n in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {n!r}")
    folder = subset_folder(data, train_per_class, test_per_class, seed, root)
    if folder == data:
        return data
    out = Path(folder)
    if (out / "subset.json").is_file():
        return folder
    splits = load_dataset(data, root=data_root, seed=seed)
    if not splits.labelled or splits.test is None:
        raise ValueError(f"a class-balanced subset needs labelled train and test splits; {data} has none")
    rng = np.random.default_rng(seed)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    counts = {}
    for split_name, ds, per_class, paths in (("train", splits.train, train_per_class, splits.train_paths),
                                             ("test", splits.test, test_per_class, splits.test_paths)):
        labels = [int(t) for t in ds.targets]
        chosen = _pick(labels, per_class, rng)
        for c in splits.classes:
            (tmp / split_name / c).mkdir(parents=True, exist_ok=True)
        for i in chosen:
            cls = splits.classes[labels[i]]
            if paths is not None:
                src = Path(paths[i])
                os.symlink(src.resolve(), tmp / split_name / cls / f"{i:06d}{src.suffix.lower()}")
            else:
                ds[i][0].save(tmp / split_name / cls / f"{i:06d}.png")
        counts[split_name] = len(chosen)
    (tmp / "subset.json").write_text(json.dumps({
        "source": _source_id(data), "seed": seed, "train_per_class": train_per_class,
        "test_per_class": test_per_class, "counts": counts, "classes": splits.classes}, indent=2) + "\n")
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished the same subset first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "subset.json").is_file():
            raise
    return folder
