"""SimCLRTransform (per image), MultiViewTransform, eval_transform: shapes, seeds, every switch."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from contrastkit.augment import (
    CIFAR10_MEAN_STD,
    MultiViewTransform,
    RandomCutout,
    RandomRotate90,
    SimCLRTransform,
    eval_transform,
)

OFF = dict(crop=False, flip=False, color=False, grayscale=False, blur=False, normalize=None)


def as_pil(img: torch.Tensor) -> Image.Image:
    return TF.to_pil_image(img)


def test_shape_dtype_for_pil_and_tensor(images32):
    t = SimCLRTransform.from_preset("cifar")
    for inp in (as_pil(images32[0]), images32[0], as_pil(TF.resize(images32[0], [50, 70]))):
        out = t(inp)
        assert type(out) is torch.Tensor and out.shape == (3, 32, 32) and out.dtype == torch.float32
    big = SimCLRTransform.from_preset("imagenet", size=64)
    assert big(as_pil(images32[0])).shape == (3, 64, 64)


def test_seeded_views_repeat_and_differ(images32):
    t = SimCLRTransform.from_preset("cifar", blur=True, rotate=0.5, cutout=0.5, solarize=0.5)
    img = as_pil(images32[3])
    torch.manual_seed(7)
    a = [t(img) for _ in range(4)]
    torch.manual_seed(7)
    b = [t(img) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])
    torch.manual_seed(8)
    assert not torch.equal(t(img), a[0])


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().mul(1.0 / 255)  # as v2.ToDtype(torch.float32, scale=True)


def test_everything_off_is_a_resize(images32):
    x = images32[5]
    assert torch.equal(SimCLRTransform(32, **OFF)(x), to_float(x))
    assert torch.equal(SimCLRTransform(32, **OFF)(as_pil(x)), to_float(x))
    small = SimCLRTransform(20, **OFF)(x)
    assert torch.allclose(small, to_float(TF.resize(x, [20, 20], antialias=True)), atol=1e-6)
    rect = SimCLRTransform(16, **OFF)(TF.resize(x, [32, 48]))
    assert rect.shape == (3, 16, 16)  # not a crop: the whole image squeezed to (size, size)


def test_normalize_is_applied_last(images32):
    x = images32[1]
    out = SimCLRTransform(32, **{**OFF, "normalize": "cifar10"})(x)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in CIFAR10_MEAN_STD)
    assert torch.allclose(out, (to_float(x) - mean) / std, atol=1e-6)


def test_single_switches(images32):
    x = images32[2]
    torch.manual_seed(0)
    gray = SimCLRTransform(32, **{**OFF, "grayscale": True, "grayscale_p": 1.0})(x)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])

    flips = {SimCLRTransform(32, **{**OFF, "flip": True})(x).flip(-1).equal(to_float(x)) for _ in range(30)}
    assert flips == {True, False}

    colour = SimCLRTransform(32, **{**OFF, "color": True, "color_p": 1.0})(x)
    assert not torch.equal(colour, to_float(x))

    blurred = SimCLRTransform(32, **{**OFF, "blur": True, "blur_p": 1.0})(x)
    assert not torch.equal(blurred, to_float(x))
    assert (blurred.mean() - to_float(x).mean()).abs() < 0.01

    crop = SimCLRTransform(32, **{**OFF, "crop": True, "crop_scale": (0.1, 0.2)})(x)
    assert crop.shape == (3, 32, 32) and not torch.equal(crop, to_float(x))


def test_rotate_gives_a_quarter_turn(images32):
    x = images32[4]
    t = SimCLRTransform(32, **{**OFF, "rotate": 1.0})
    turns = set()
    for _ in range(30):
        out = t(x)
        k = [k for k in (1, 2, 3) if torch.equal(out, to_float(torch.rot90(x, k, dims=(-2, -1))))]
        assert len(k) == 1
        turns.add(k[0])
    assert turns == {1, 2, 3}
    pil = as_pil(x)  # PIL rotation agrees with torch.rot90
    torch.manual_seed(3)
    a = RandomRotate90(1.0)(pil)
    torch.manual_seed(3)
    assert torch.equal(TF.pil_to_tensor(a), RandomRotate90(1.0)(x))


def test_cutout_erases_one_clipped_square(images32):
    x = to_float(images32[6])
    t = SimCLRTransform(32, **{**OFF, "cutout": 1.0})
    for _ in range(20):
        out = t(images32[6])
        hole = (out != x).any(0)
        rows, cols = hole.any(1).nonzero().squeeze(1), hole.any(0).nonzero().squeeze(1)
        assert (out[:, hole] == 0).all()
        assert rows.numel() <= 16 and cols.numel() <= 16  # side 0.5 * 32, clipped at the border
        assert hole.sum() == rows.numel() * cols.numel()  # a rectangle
    with pytest.raises(TypeError, match="expects a tensor"):
        RandomCutout(1.0)(as_pil(images32[0]))


def test_solarize(images32):
    x = images32[7]
    out = SimCLRTransform(32, **{**OFF, "solarize": 1.0})(x)
    assert torch.equal(out, to_float(TF.solarize(x, 128)))


def test_multi_view():
    img = Image.new("RGB", (40, 40), (200, 30, 90))
    t = SimCLRTransform.from_preset("cifar")
    views = MultiViewTransform(t, n_views=3)(img)
    assert isinstance(views, list) and len(views) == 3 and all(v.shape == (3, 32, 32) for v in views)
    assert MultiViewTransform(t).n_views == 2
    mixed = MultiViewTransform([t, eval_transform(32, "cifar10")])
    assert mixed.n_views == 2 and all(v.shape == (3, 32, 32) for v in mixed(img))


def test_multi_view_validation():
    t = SimCLRTransform(32)
    with pytest.raises(ValueError, match="needs V >= 2 views, got 1"):
        MultiViewTransform(t, n_views=1)
    with pytest.raises(ValueError, match="n_views=3 but 2 transforms"):
        MultiViewTransform([t, t], n_views=3)
    with pytest.raises(TypeError, match="must be callable"):
        MultiViewTransform([t, 3])
    with pytest.raises(TypeError, match="n_views must be an int"):
        MultiViewTransform(t, n_views=2.0)


def test_eval_transform():
    img = Image.new("RGB", (300, 256), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 256))  # a blue strip on the left, cropped away by the centre crop
    out = eval_transform(224, "imagenet", crop_fraction=0.875)(img)
    assert out.shape == (3, 224, 224)
    assert torch.allclose(out[:, 100, 100], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]), atol=1e-4)
    same = eval_transform(32)(torch.arange(3 * 32 * 32, dtype=torch.int64).remainder(256).to(torch.uint8).view(3, 32, 32))
    assert torch.equal(same, to_float(torch.arange(3 * 32 * 32).remainder(256).view(3, 32, 32)))
    with pytest.raises(ValueError, match="crop_fraction must be in"):
        eval_transform(32, crop_fraction=1.5)
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        eval_transform(0)


def test_pipeline_is_torchvision_v2():
    t = SimCLRTransform.from_preset("imagenet")
    kinds = [type(op) for op in t.pipeline.transforms]
    assert kinds[:2] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip]
    blur = [op for op in t.pipeline.transforms if isinstance(op, v2.RandomApply) and isinstance(op.transforms[0], v2.GaussianBlur)]
    assert blur and blur[0].p == 0.5 and tuple(blur[0].transforms[0].kernel_size) == (23, 23)
