"""Bringing input images to 3-channel RGB: PIL modes and uint8 tensors.

:func:`to_rgb` is the one place where a PIL image of any common mode becomes an
8-bit RGB image; the data loader and the augmentation pipelines both use it.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["to_rgb", "SUPPORTED_PIL_MODES", "check_image_tensor"]

_PLAIN_MODES = ("RGB", "1", "L", "P", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
_ALPHA_MODES = ("LA", "PA", "RGBA", "RGBa")
_WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
#: PIL modes :func:`to_rgb` accepts.
SUPPORTED_PIL_MODES: tuple[str, ...] = _PLAIN_MODES + _ALPHA_MODES + _WIDE_MODES


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Converts a PIL image of any common mode to 8-bit RGB, the way a viewer shows it.

    - ``RGB`` is returned as is.
    - ``1``, ``L``, ``P`` (without transparency), ``RGBX``, ``YCbCr``, ``LAB``,
      ``HSV``: Pillow's own conversion. ``CMYK`` uses Pillow's
      ``R = (255 - C)(255 - K) / 255`` (Pillow >= 10).
    - Modes with transparency (``LA``, ``PA``, ``RGBA``, ``RGBa``, and ``P``
      with a ``transparency`` entry) are alpha-composited over ``background``
      (white by default) rather than having the alpha channel dropped, which
      would expose whatever colour hides under transparent pixels.
    - 16-bit and 32-bit integer grayscale (``I;16``, ``I;16L``, ``I;16B``,
      ``I;16N``, ``I``; Pillow opens 16-bit PNG and TIFF files as these) are
      taken to hold values in [0, 65535] and scaled to [0, 255] by ``v / 257``
      (rounded; ``I`` values outside the range are clipped). Pillow's own
      ``convert("RGB")`` would clip every value above 255 to white.

    Args:
        img: the image.
        background: RGB colour (0-255 each) behind transparent pixels.

    Returns:
        An ``RGB`` image of the same size.

    Raises:
        TypeError: ``img`` is not a PIL image.
        ValueError: its mode is not in :data:`SUPPORTED_PIL_MODES` (e.g. float ``F``,
            whose value range is unknown).
    """
    if not isinstance(img, Image.Image):
        raise TypeError(f"to_rgb expects a PIL.Image.Image, got {type(img).__name__}")
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _WIDE_MODES:
        values = np.asarray(img).astype(np.float64)  # (H, W), any integer byte order
        values = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(values, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        mode = "PA"
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        back = Image.new("RGBA", img.size, tuple(int(c) for c in background) + (255,))
        return Image.alpha_composite(back, rgba).convert("RGB")
    if mode in _PLAIN_MODES:
        return img.convert("RGB")
    raise ValueError(f"unsupported PIL image mode {img.mode!r}; supported modes: {list(SUPPORTED_PIL_MODES)}")


def check_image_tensor(img: torch.Tensor, name: str = "image") -> torch.Tensor:
    """Validates a uint8 image tensor ``(C, H, W)`` and returns it with 3 channels.

    One channel is repeated to three; four channels (RGBA) are refused because the
    alpha channel cannot be composited without a background: use :func:`to_rgb`
    on a PIL image instead.

    Args:
        img: uint8 tensor of shape ``(C, H, W)`` with C in {1, 3}.
        name: what to call it in error messages.

    Returns:
        A ``(3, H, W)`` uint8 tensor (a view when C = 1).

    Raises:
        TypeError: not a tensor, or not uint8.
        ValueError: wrong number of dimensions or channels, or an empty image.
    """
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name} must be a PIL image or a uint8 tensor (C, H, W), got {type(img).__name__}")
    if img.dtype != torch.uint8:
        raise TypeError(f"{name} tensor must be uint8 with values 0-255, got dtype {img.dtype}")
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"{name} tensor must have shape (C, H, W) with C in {{1, 3}}, got {tuple(img.shape)}")
    if img.shape[1] == 0 or img.shape[2] == 0:
        raise ValueError(f"{name} tensor is empty: shape {tuple(img.shape)}")
    return img.expand(3, -1, -1) if img.shape[0] == 1 else img
