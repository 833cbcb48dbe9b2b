"""Tiny CIFAR-10 / CIFAR-100 in torchvision's own on-disk format (the "python version" pickles), so that
``--data cifar10`` runs through torchvision's real dataset classes without a download.

torchvision checks each file against the md5 of the real release; :func:`write_cifar` makes the class expect the
checksums of the files written here instead (``monkeypatch``), so everything else of its loading code runs as it
does on the real files.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torchvision.datasets as tvd

from conftest import CLASS_COLOURS

#: data set -> (torchvision class, train files, test files, metadata file, labels key, names key)
_LAYOUT = {
    "cifar10": (tvd.CIFAR10, [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "labels",
                "label_names"),
    "cifar100": (tvd.CIFAR100, ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar_images(labels: list[int], seed: int) -> np.ndarray:
    """(N, 3072) uint8 rows in CIFAR's layout (channel planes of 32 x 32): noise around a class colour with a
    bright square at a class-dependent place, as the tests' image folders."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in labels:
        img = np.array(CLASS_COLOURS[c % len(CLASS_COLOURS)], dtype=np.float64) + rng.normal(0, 25, (32, 32, 3))
        img[(c * 3) % 24:(c * 3) % 24 + 8, :8] = 255
        rows.append(np.clip(img, 0, 255).astype(np.uint8).transpose(2, 0, 1).reshape(-1))  # (3072,) CHW
    return np.stack(rows)


def write_cifar(root: Path, monkeypatch, name: str = "cifar10", train_per_class: int = 2, test_per_class: int = 1,
                classes: int = 10, trust: bool = True) -> Path:
    """Write ``name`` under ``root`` as torchvision keeps it; with ``trust``, torchvision's class is made to expect
    these files' checksums. Returns the data set's folder (``root/cifar-10-batches-py``)."""
    cls, train_files, test_files, meta_file, labels_key, names_key = _LAYOUT[name]
    folder = Path(root) / cls.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = [c for c in range(classes) for _ in range(train_per_class)]
    chunks = np.array_split(np.arange(len(train_labels)), len(train_files))
    parts = [(f, [train_labels[i] for i in idx], 1 + k) for k, (f, idx) in enumerate(zip(train_files, chunks))]
    parts.append((test_files[0], [c for c in range(classes) for _ in range(test_per_class)], 0))
    for file, labels, seed in parts:
        with open(folder / file, "wb") as f:
            pickle.dump({"data": cifar_images(labels, seed), labels_key: labels}, f)
    with open(folder / meta_file, "wb") as f:
        pickle.dump({names_key: [f"class{c}" for c in range(classes)]}, f)
    if trust:
        monkeypatch.setattr(cls, "train_list", [[f, _md5(folder / f)] for f in train_files])
        monkeypatch.setattr(cls, "test_list", [[f, _md5(folder / f)] for f in test_files])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / meta_file)})
    return folder
