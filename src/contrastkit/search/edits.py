"""The edits that make a near-duplicate of an image, each drawn at random within a small range.

These are what copies of one picture go through on their way into a collection: saved again as JPEG,
scaled, trimmed, nudged, lightened, straightened. :mod:`.calibrate` applies them to a sample of an
index's own images to see how similar the encoder finds a copy and its original; the near-duplicate
benchmark plants copies made with them (other seeds).

Sizes are relative to the image, so an edit does to a 4,000-pixel photo what it does to a 32-pixel
thumbnail; at least one pixel always changes.

| kind | what |
| --- | --- |
| ``jpeg`` | re-encoded as JPEG at quality 25-75 |
| ``rescale`` | resized to 50-80% or 125-200% of its side (bicubic) and kept at that size |
| ``crop`` | 85-95% of each side kept, at a random offset |
| ``shift`` | moved by 3-8% of the side along each axis, the border filled by its edge pixels |
| ``brightness_contrast`` | brightness and contrast each scaled by 0.75-1.25 (at least one by 8% or more) |
| ``rotate`` | rotated 2-6 degrees either way about the centre, same size, corners filled by the mean colour |
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance

__all__ = ["EDIT_KINDS", "apply_edit"]


def _jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(rng.integers(25, 76)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _rescale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    factor = rng.uniform(0.5, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 2.0)
    size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
    return img.resize(size, Image.BICUBIC)


def _crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    cw, ch = (max(1, min(side - 1, round(side * rng.uniform(0.85, 0.95)))) if side > 1 else 1 for side in (w, h))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((left, top, left + cw, top + ch))


def _shift(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img)  # (H, W, 3)
    h, w = arr.shape[:2]
    dy, dx = (max(1, round(side * rng.uniform(0.03, 0.08))) * int(rng.choice([-1, 1])) for side in (h, w))
    dy, dx = max(-(h - 1), min(h - 1, dy)) if h > 1 else 0, max(-(w - 1), min(w - 1, dx)) if w > 1 else 0
    padded = np.pad(arr, ((abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0)), mode="edge")  # (H + 2|dy|, W + 2|dx|, 3)
    top, left = abs(dy) - dy, abs(dx) - dx
    return Image.fromarray(np.ascontiguousarray(padded[top:top + h, left:left + w]))


def _brightness_contrast(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    while True:
        b, c = rng.uniform(0.75, 1.25, size=2)
        if max(abs(b - 1), abs(c - 1)) >= 0.08:
            break
    return ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(b)).enhance(c)


def _rotate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = rng.uniform(2.0, 6.0) * rng.choice([-1, 1])
    fill = tuple(int(v) for v in np.asarray(img).reshape(-1, 3).mean(0))
    return img.rotate(angle, resample=Image.BICUBIC, expand=False, fillcolor=fill)


_EDITS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "jpeg": _jpeg, "rescale": _rescale, "crop": _crop, "shift": _shift,
    "brightness_contrast": _brightness_contrast, "rotate": _rotate,
}
#: The edit kinds, in the order reports list them.
EDIT_KINDS = tuple(_EDITS)


def apply_edit(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """A near-duplicate of ``img`` made by the edit ``kind`` (see the module docstring), drawn with ``rng``.

    Args:
        img: an RGB image.
        kind: one of :data:`EDIT_KINDS`.
        rng: the random source of the edit's strength.

    Returns:
        A new RGB image (``img`` is left as it is).

    Raises:
        ValueError: an unknown kind, or an image that is not RGB.
    """
    if kind not in _EDITS:
        raise ValueError(f"unknown edit {kind!r}; the edits are {', '.join(EDIT_KINDS)}")
    if img.mode != "RGB":
        raise ValueError(f"apply_edit needs an RGB image, got mode {img.mode!r}")
    return _EDITS[kind](img, rng)
