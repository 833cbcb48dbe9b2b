"""save_preview writes a readable PNG grid: rows = images, columns = original + views."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from contrastkit.augment import CIFAR10_MEAN_STD, BatchAugment, SimCLRTransform, save_preview, unnormalize


def grid_side(n: int, cell: int, pad: int = 2) -> int:
    return n * (cell + pad) + pad


def test_preview_png_per_image_transform(tmp_path, images32):
    images = [TF.to_pil_image(im) for im in images32[:3]] + [Image.new("LA", (50, 40))]
    path = tmp_path / "sub" / "grid.png"
    grid = save_preview(images, SimCLRTransform.from_preset("cifar"), path, n_views=4)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert png.size == (grid_side(5, 32), grid_side(4, 32))
    assert grid.shape == (3, grid_side(4, 32), grid_side(5, 32)) and 0 <= grid.min() and grid.max() <= 1


def test_preview_png_batch_augment_and_tensor_batch(tmp_path, images32):
    path = tmp_path / "batch.png"
    save_preview(images32[:2], BatchAugment.from_preset("cifar", n_views=2, size=24), path, n_views=3)
    with Image.open(path) as png:
        assert png.size == (grid_side(4, 24), grid_side(2, 24))


def test_original_column_and_unnormalising(tmp_path, images32):
    off = dict(crop=False, flip=False, color=False, grayscale=False, blur=False, normalize="cifar10")
    grid = save_preview(images32[:1], SimCLRTransform(32, **off), tmp_path / "g.png", n_views=1, padding=0)
    x = images32[0].float() / 255
    assert torch.allclose(grid[:, :, :32], x, atol=1e-5)  # the original
    assert torch.allclose(grid[:, :, 32:], x, atol=1e-5)  # the view, normalised then un-normalised
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in CIFAR10_MEAN_STD)
    assert torch.allclose(unnormalize((x - mean) / std, CIFAR10_MEAN_STD), x, atol=1e-5)


def test_preview_validation(tmp_path):
    t = SimCLRTransform(32)
    with pytest.raises(ValueError, match="at least one image"):
        save_preview([], t, tmp_path / "x.png")
    with pytest.raises(ValueError, match="n_views must be an int >= 1, got 0"):
        save_preview([Image.new("RGB", (8, 8))], t, tmp_path / "x.png", n_views=0)
    with pytest.raises(TypeError, match="PIL image or a uint8 tensor"):
        save_preview(["not an image"], t, tmp_path / "x.png")
