"""Fixtures of the augmentation tests: small synthetic colour images, one torch thread."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(autouse=True)
def _one_thread():
    """Run each test on one torch thread (the machine is shared; small ops gain nothing from two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """n colourful, smooth uint8 images (n, 3, size, size): upsampled random 4x4 colour fields plus noise.

    Smooth so that crops and blur change them gradually, colourful so that hue and
    saturation act, never gray (no two channels equal everywhere).
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    img = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    img = img + 0.03 * torch.randn(n, 3, size, size, generator=g)
    return img.clamp(0, 1).mul(255).round().to(torch.uint8)


@pytest.fixture(scope="session")
def images32() -> torch.Tensor:
    return smooth_images(64, 32, seed=0)


@pytest.fixture(scope="session")
def make_images():
    """The :func:`smooth_images` factory."""
    return smooth_images
