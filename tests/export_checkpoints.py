"""Checkpoints for the export tests (tests/export), written directly (no training) in the layout
``contrastkit pretrain`` uses.

BatchNorm statistics and affine parameters are randomised, so that an export which dropped or misnamed a
tensor would give different features (a freshly initialised BN is nearly the identity).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from contrastkit.config import PretrainConfig
from contrastkit.models import build_model, load_checkpoint_model, save_checkpoint

MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]


def make_checkpoint(path: Path, encoder: str = "resnet18", width: float = 0.125, cifar_stem: str = "on",
                    size: int = 16, method: str = "simclr", seed: int = 0, head_layers: int = 2) -> Path:
    cfg = PretrainConfig(encoder=encoder, width=width, cifar_stem=cifar_stem, method=method, proj_dim=16,
                         head_layers=head_layers)
    torch.manual_seed(seed)
    model = build_model(cfg, 3 if method == "ce" else None, size)  # the CE baseline: a 3-class head
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1,
                     "meta": {"encoder": encoder, "feature_dim": model.encoder.feature_dim, "image_size": size,
                              "preset": "cifar", "mean": MEAN, "std": STD, "classes": ["a", "b", "c"],
                              "data": "toy", "method": method}}, path)
    return path


@functools.lru_cache(maxsize=8)
def _model(checkpoint: Path) -> nn.Module:
    return load_checkpoint_model(checkpoint)[0]


def features(checkpoint: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """contrastkit's own (h, z) of a checkpoint."""
    with torch.no_grad():
        return _model(Path(checkpoint))(x)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())
