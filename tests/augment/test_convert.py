"""to_rgb: every common PIL mode becomes the RGB image a viewer would show; tensor inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.augment import SUPPORTED_PIL_MODES, SimCLRTransform, eval_transform, to_rgb


def px(img: Image.Image, xy=(0, 0)) -> tuple:
    return tuple(to_rgb(img).getpixel(xy))


def test_rgb_is_returned_unchanged():
    img = Image.new("RGB", (4, 4), (1, 2, 3))
    assert to_rgb(img) is img


def test_grayscale_and_bilevel():
    assert px(Image.new("L", (2, 2), 77)) == (77, 77, 77)
    assert px(Image.new("1", (2, 2), 1)) == (255, 255, 255)


def test_alpha_is_composited_over_white_or_given_background():
    rgba = Image.new("RGBA", (2, 1), (200, 0, 0, 0))
    rgba.putpixel((1, 0), (200, 0, 0, 255))
    assert px(rgba, (0, 0)) == (255, 255, 255)  # fully transparent: the background
    assert px(rgba, (1, 0)) == (200, 0, 0)  # opaque: the colour
    half = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    assert px(half) == (127, 127, 127)
    assert tuple(to_rgb(rgba, background=(0, 0, 255)).getpixel((0, 0))) == (0, 0, 255)
    la = Image.new("LA", (1, 1), (10, 0))
    assert px(la) == (255, 255, 255)


def test_palette_with_and_without_transparency():
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.putpixel((0, 0), 1)
    p.putpixel((1, 0), 0)
    assert px(p, (0, 0)) == (10, 20, 30)
    p.info["transparency"] = 0  # index 0 transparent
    assert px(p, (1, 0)) == (255, 255, 255)
    assert px(p, (0, 0)) == (10, 20, 30)


def test_cmyk_multiplicative():
    img = Image.new("CMYK", (1, 1), (100, 50, 0, 128))
    expected = tuple(round((255 - c) * (255 - 128) / 255) for c in (100, 50, 0))
    assert max(abs(a - b) for a, b in zip(px(img), expected)) <= 1


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16_bit_is_scaled_not_clipped(mode):
    values = np.array([[0, 257 * 10, 32768, 65535]], dtype={"I;16": "<u2", "I;16B": ">u2", "I": "<i4"}[mode])
    img = Image.fromarray(values.astype(np.int32), mode="I") if mode == "I" else Image.frombytes(mode, (4, 1), values.tobytes())
    assert img.mode == mode
    out = np.asarray(to_rgb(img))
    assert out[0, :, 0].tolist() == [0, 10, 128, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_32_bit_int_out_of_range_is_clipped():
    img = Image.fromarray(np.array([[-5, 70000]], dtype=np.int32), mode="I")
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 255]


def test_other_modes_convert():
    for mode in ("YCbCr", "HSV", "LAB", "RGBX", "RGBa", "PA"):
        assert to_rgb(Image.new(mode, (3, 2))).mode == "RGB"
    assert set(SUPPORTED_PIL_MODES) >= {"L", "LA", "P", "RGBA", "CMYK", "I;16", "I"}


def test_errors():
    with pytest.raises(ValueError, match="unsupported PIL image mode 'F'"):
        to_rgb(Image.new("F", (2, 2)))
    with pytest.raises(TypeError, match="expects a PIL.Image.Image, got ndarray"):
        to_rgb(np.zeros((2, 2, 3), dtype=np.uint8))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "1"])
def test_transforms_accept_every_mode(mode):
    img = Image.new(mode, (40, 36))
    assert SimCLRTransform.from_preset("cifar")(img).shape == (3, 32, 32)
    assert eval_transform(24)(img).shape == (3, 24, 24)


def test_tensor_inputs():
    t = SimCLRTransform(16, normalize=None)
    assert t(torch.zeros(3, 20, 24, dtype=torch.uint8)).shape == (3, 16, 16)
    gray = t(torch.full((1, 20, 20), 9, dtype=torch.uint8))  # one channel is repeated
    assert gray.shape == (3, 16, 16)
    with pytest.raises(TypeError, match="uint8 with values 0-255, got dtype torch.float32"):
        t(torch.zeros(3, 20, 20))
    with pytest.raises(ValueError, match=r"shape \(C, H, W\) with C in \{1, 3\}, got \(4, 20, 20\)"):
        t(torch.zeros(4, 20, 20, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"got \(2, 3, 20, 20\)"):
        t(torch.zeros(2, 3, 20, 20, dtype=torch.uint8))
    with pytest.raises(TypeError, match="PIL image or a uint8 tensor"):
        t(np.zeros((20, 20, 3), dtype=np.uint8))
