"""Batched kernels against torchvision's per-image functionals, sample by sample."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from contrastkit.augment import functional as AF

ATOL = 2e-6


def per_image(fn, x: torch.Tensor, factors) -> torch.Tensor:
    return torch.stack([fn(x[i], float(f)) for i, f in enumerate(factors)])


@pytest.fixture
def batch(make_images) -> torch.Tensor:
    x = make_images(12, 16, seed=1).float() / 255
    x[0] = 0.5  # a gray image (chroma 0)
    x[1, :, :4] = torch.tensor([1.0, 1.0, 0.2]).view(3, 1, 1)  # ties between max channels
    x[2, :, :4] = torch.tensor([0.3, 0.9, 0.9]).view(3, 1, 1)
    x[3, :, :4] = torch.tensor([0.8, 0.1, 0.8]).view(3, 1, 1)
    return x


def test_gray_matches(batch):
    assert torch.allclose(AF.rgb_to_gray(batch), TF.rgb_to_grayscale(batch), atol=ATOL)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (AF.adjust_brightness_, TF.adjust_brightness),
        (AF.adjust_contrast_, TF.adjust_contrast),
        (AF.adjust_saturation_, TF.adjust_saturation),
    ],
)
def test_blends_match(batch, ours, theirs):
    f = torch.linspace(0.0, 2.0, batch.shape[0])
    assert torch.allclose(ours(batch.clone(), f), per_image(theirs, batch, f), atol=ATOL)
    assert torch.allclose(ours(batch.clone(), 1.3), per_image(theirs, batch, [1.3] * batch.shape[0]), atol=ATOL)


def test_fused_blend_mixes_ops_per_sample(batch):
    n = batch.shape[0]
    f = torch.linspace(0.3, 1.7, n)
    wg = torch.tensor([1.0, 0, 0] * (n // 3))  # saturation, contrast, brightness, ...
    wm = torch.tensor([0, 1.0, 0] * (n // 3))
    fns = [TF.adjust_saturation, TF.adjust_contrast, TF.adjust_brightness] * (n // 3)
    expected = torch.stack([fn(batch[i], float(f[i])) for i, fn in enumerate(fns)])
    assert torch.allclose(AF.color_blend_(batch.clone(), f, wg, wm), expected, atol=ATOL)


def test_hue_matches_torchvision(batch):
    f = torch.linspace(-0.5, 0.5, batch.shape[0])
    assert torch.allclose(AF.adjust_hue(batch, f), per_image(TF.adjust_hue, batch, f), atol=1e-5)
    rand = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    f = torch.rand(64, generator=torch.Generator().manual_seed(1)) - 0.5
    assert torch.allclose(AF.adjust_hue(rand, f), per_image(TF.adjust_hue, rand, f), atol=1e-5)
    quantised = torch.randint(0, 4, (32, 3, 8, 8), generator=torch.Generator().manual_seed(2)) / 3.0  # many ties
    f = f[:32]
    assert torch.allclose(AF.adjust_hue(quantised, f), per_image(TF.adjust_hue, quantised, f), atol=1e-5)
    assert torch.allclose(AF.adjust_hue(batch, 0.0), batch, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [3, 7, 23])
def test_blur_matches_per_sigma(kernel_size, make_images):
    x = make_images(5, 32, seed=2).float() / 255
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.6, 2.0])
    expected = torch.stack([TF.gaussian_blur(x[i], [kernel_size] * 2, [float(s)] * 2) for i, s in enumerate(sigma)])
    assert torch.allclose(AF.gaussian_blur(x, sigma, kernel_size), expected, atol=1e-5)
    with pytest.raises(ValueError, match="positive odd"):
        AF.gaussian_blur(x, sigma, 4)


def test_solarize_matches(batch):
    assert torch.allclose(AF.solarize_(batch.clone(), 0.5), TF.solarize(batch, 0.5))


def _torchvision_boxes(n, height, width, scale, ratio, seed):
    torch.manual_seed(seed)
    img = torch.empty(3, height, width)
    return torch.tensor([RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)]).T


def _ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = torch.cat([a, b]).sort().values
    cdf = lambda s: torch.searchsorted(s.sort().values, grid, right=True).double() / len(s)  # noqa: E731
    return float((cdf(a) - cdf(b)).abs().max())


@pytest.mark.parametrize("height, width", [(32, 32), (20, 64), (224, 160)])
def test_crop_boxes_distribution_matches_torchvision(height, width):
    n, scale, ratio = 4000, (0.08, 1.0), (3 / 4, 4 / 3)
    top, left, h, w = AF.sample_crop_boxes(n, height, width, scale, ratio, torch.Generator().manual_seed(0))
    assert ((top >= 0) & (left >= 0) & (top + h <= height) & (left + w <= width) & (h > 0) & (w > 0)).all()
    ref_top, ref_left, ref_h, ref_w = _torchvision_boxes(n, height, width, scale, ratio, seed=1)
    area, ref_area = (h * w).double() / (height * width), (ref_h * ref_w).double() / (height * width)
    logr, ref_logr = (w / h).double().log(), (ref_w / ref_h).double().log()
    # 4000 vs 4000 samples: the 0.1% critical KS distance is ~0.044.
    for ours, theirs in ((area, ref_area), (logr, ref_logr), (top.double() / height, ref_top.double() / height),
                         (left.double() / width, ref_left.double() / width)):
        assert _ks(ours, theirs) < 0.05
        assert abs(ours.mean() - theirs.mean()) < 0.02
    fallback = lambda hh, ww: ((hh == height) & (ww == min(width, round(height * 4 / 3)))).double().mean()  # noqa: E731
    assert abs(fallback(h, w) - fallback(ref_h, ref_w)) < 0.03


def test_crop_boxes_fallback_is_centre_crop():
    top, left, h, w = AF.sample_crop_boxes(50, 10, 100, (0.9, 1.0), (3 / 4, 4 / 3))  # nothing fits: too wide
    assert (h == 10).all() and (w == 13).all() and (top == 0).all() and (left == (100 - 13) // 2).all()


def test_crop_geometry_matches_resized_crop(make_images):
    x = make_images(6, 32, seed=3).float() / 255
    S = 32
    top = torch.tensor([0, 4, 10, 0, 3, 7])
    left = torch.tensor([0, 2, 9, 5, 0, 11])
    h = torch.tensor([32, 20, 16, 12, 29, 21])
    w = torch.tensor([32, 25, 13, 16, 24, 17])
    v = AF.resized_crop(x, AF.crop_theta(top, left, h, w, 32, 32), S)
    for i in range(6):
        ref = TF.resized_crop(x[i], int(top[i]), int(left[i]), int(h[i]), int(w[i]), [S, S], antialias=False)
        # torchvision clamps taps to the crop; grid_sample may read one pixel beyond it: skip that border.
        by, bx = math.ceil(S / (2 * int(h[i]))), math.ceil(S / (2 * int(w[i])))
        inner = (slice(None), slice(by, S - by), slice(bx, S - bx))
        assert torch.allclose(v[i][inner], ref[inner], atol=1e-5), i
    full = AF.resized_crop(x, AF.crop_theta(top[:1], left[:1], h[:1], w[:1], 32, 32).expand(6, 2, 3), 48)
    assert torch.allclose(full, TF.resize(x, [48, 48], antialias=False), atol=1e-5)


def test_flip_and_rotation_compose_like_torch(make_images):
    x = make_images(4, 16, seed=4).float() / 255
    box = [torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), torch.full((4,), 16), torch.full((4,), 16)]
    flip = torch.tensor([False, True, True, False])
    rot = torch.tensor([0, 1, 2, 3])
    v = AF.resized_crop(x, AF.crop_theta(*box, 16, 16, flip, rot), 16)
    for i in range(4):
        ref = x[i].flip(-1) if flip[i] else x[i]
        ref = torch.rot90(ref, int(rot[i]), dims=(-2, -1))
        assert torch.allclose(v[i], ref, atol=1e-5), i
    assert torch.allclose(AF.affine_grid(AF.crop_theta(*box, 16, 16, flip, rot), 16),
                          torch.nn.functional.affine_grid(AF.crop_theta(*box, 16, 16, flip, rot), [4, 3, 16, 16],
                                                          align_corners=False), atol=1e-6)
