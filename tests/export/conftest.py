"""Session-wide checkpoints for the export tests (see export_checkpoints.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from export_checkpoints import make_checkpoint


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """ResNet-18 at width 0.125 with the CIFAR stem, 16 px: what --format torchvision refuses."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny") / "last.pt")


@pytest.fixture(scope="session")
def stock_ckpt(tmp_path_factory) -> Path:
    """ResNet-18 at width 1 with the ImageNet stem (torchvision.models.resnet18), 32 px."""
    return make_checkpoint(tmp_path_factory.mktemp("stock") / "last.pt", width=1.0, cifar_stem="off", size=32)


@pytest.fixture(scope="session")
def timm_ckpt(tmp_path_factory) -> Path:
    pytest.importorskip("timm")
    return make_checkpoint(tmp_path_factory.mktemp("timm") / "last.pt", encoder="timm:resnet10t", size=16)
