"""Shared pieces of the search tests (imported as ``search._common``): a checkpoint saved as the trainer
saves one (untrained weights) and image folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.config import PretrainConfig
from contrastkit.models import build_model, save_checkpoint


def save_tiny_checkpoint(path: Path, data: str = "digits", seed: int = 0) -> Path:
    """A ResNet-18 of width 0.125 (h is 64-d) with random weights, in the trainer's checkpoint format."""
    cfg = PretrainConfig.from_dict({"encoder": "resnet18", "width": 0.125, "cifar_stem": "on", "data": data,
                                    "seed": seed})
    torch.manual_seed(seed)
    model = build_model(cfg, None, 16)
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(),
                     "meta": {"encoder": cfg.encoder, "feature_dim": model.encoder.feature_dim, "image_size": 16,
                              "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "classes": [], "data": data,
                              "method": "simclr"}}, path)
    return path


def make_flat_folder(root: Path, n: int = 10, size: int = 20, seed: int = 0) -> Path:
    """``n`` unlabelled RGB PNGs of distinct random colour blobs, directly in ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(0, 256, size=(1, 1, 3)) + rng.normal(0, 30, size=(size, size, 3))
        img[: size // 2, : size // 2] = rng.integers(0, 256, size=3)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"img_{i:03d}.png")
    return root


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_tiny_checkpoint(tmp_path / "run" / "last.pt")


@pytest.fixture
def other_checkpoint(tmp_path: Path) -> Path:
    return save_tiny_checkpoint(tmp_path / "run_other" / "last.pt", seed=1)


@pytest.fixture
def flat_folder(tmp_path: Path) -> Path:
    return make_flat_folder(tmp_path / "photos")
