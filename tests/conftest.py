"""Shared fixtures: tiny synthetic image folders made by the tests (no downloads)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

if "OMP_NUM_THREADS" not in os.environ:  # the machine's 2 cores, unless the caller chose (make test-avx2: 1)
    torch.set_num_threads(2)

CLASS_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]


def make_image_folder(root: Path, per_class: int = 12, size: int = 16, classes: int = 3, seed: int = 0,
                      split: bool = True) -> Path:
    """Class c: noise around a class colour, with a bright square at a class-dependent place."""
    rng = np.random.default_rng(seed)
    parts = {"train": per_class, "test": max(2, per_class // 3)} if split else {"": per_class}
    for part, n in parts.items():
        for c in range(classes):
            d = root / part / f"class_{c}" if part else root / f"class_{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.array(CLASS_COLOURS[c % len(CLASS_COLOURS)], dtype=np.float64)
                img = base + rng.normal(0, 25, size=(size, size, 3))
                q = size // 3
                img[c * q % size:(c * q % size) + q, :q] = 255
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data")


TINY = ["--encoder", "resnet18", "--width", "0.125", "--cifar-stem", "on", "--batch-size", "12",
        "--num-workers", "0", "--no-progress", "--knn-k", "5", "--lr", "0.05"]


def pretrain_head3(root: Path) -> tuple[Path, Path]:
    """A tiny image folder under ``root`` and a 1-epoch SimCLR run on it with SimCLRv2's 3-layer head: the
    pretraining that the fine-tuning and distillation tests start from. Returns (folder, run folder)."""
    from contrastkit.cli import main

    folder = make_image_folder(root / "data")
    run = root / "run"
    assert main(["pretrain", "--data", str(folder), "--epochs", "1", "--knn-every", "0", "--head-layers", "3",
                 "--out", str(run), *TINY]) == 0
    return folder, run


def wrap_objective(monkeypatch, wrap) -> None:
    """Runs built after this call train with ``wrap(objective)`` in place of their method's objective (to inject
    a NaN loss at chosen steps)."""
    import dataclasses

    import contrastkit.train.run as run

    real = run.get_method

    def method(name):
        m = real(name)

        def build(cfg, data):
            parts = m.build(cfg, data)
            parts.objective = wrap(parts.objective)
            return parts

        return dataclasses.replace(m, build=build)

    monkeypatch.setattr(run, "get_method", method)
