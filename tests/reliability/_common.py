"""Shared pieces of the reliability tests (issue 6): a 12-image training folder and a 3-step epoch.

Imported as ``reliability._common`` (``tests/`` is on the path); the ``folder`` fixture is
re-exported by ``conftest.py`` of this folder.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY, make_image_folder

# 12 training images of 16 px, batch 4: three steps an epoch; cifar preset at 16 px keeps a step cheap.
FAST = [*TINY, "--batch-size", "4", "--size", "16", "--preset", "cifar", "--knn-every", "0", "--device", "cpu"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """train/ (3 classes x 4 images) and test/ (3 x 2) of 16 px RGB PNGs."""
    return make_image_folder(tmp_path / "data", per_class=4, size=16)


def pretrain_args(folder: Path, out: Path, *extra: str, epochs: int = 1) -> list[str]:
    return ["pretrain", "--method", "simclr", "--data", str(folder), "--epochs", str(epochs), "--out", str(out),
            *FAST, *extra]


def all_finite(state: dict) -> bool:
    """Every floating tensor of a (nested) state dict is finite."""
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(all_finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(all_finite(v) for v in state)
    return True
