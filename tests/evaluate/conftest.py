"""Shared fixtures for the evaluation tests: synthetic embeddings and image sets."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset


def make_clusters(n_per_class: int, num_classes: int, dim: int = 16, noise: float = 0.05, seed: int = 0):
    """Tight clusters around orthogonal class directions: perfectly separable.

    Shape:
        -> features (n_per_class * num_classes, dim), labels (same N,).
    """
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(num_classes, dim)  # (C, D)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)  # (N,)
    feats = centres[labels] + noise * torch.randn(labels.numel(), dim, generator=g)  # (N, D)
    perm = torch.randperm(labels.numel(), generator=g)
    return feats[perm], labels[perm]


def make_colour_images(n_per_class: int, seed: int = 0, size: int = 8) -> TensorDataset:
    """Two classes of noise images: class 0 reddish, class 1 bluish.

    Shape:
        images (2 * n_per_class, 3, size, size), labels (2 * n_per_class,).
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(2).repeat_interleave(n_per_class)  # (N,)
    means = torch.tensor([[0.8, 0.0, -0.8], [-0.8, 0.0, 0.8]])[labels]  # (N, 3)
    images = means[:, :, None, None] + 0.7 * torch.randn(labels.numel(), 3, size, size, generator=g)
    return TensorDataset(images.float(), labels)


@pytest.fixture
def clusters():
    return make_clusters


@pytest.fixture
def colour_images():
    return make_colour_images
