"""The evaluation preprocessing of a contrastkit encoder, as a torchvision-style transform on PIL images.

It is what ``contrastkit eval`` does to an image before the encoder sees it: shorter side resized to the
training size (bicubic) and centre-cropped to a square (as :func:`contrastkit.data.decode_to_array`), then
scaled to [0, 1] and normalised with the training statistics.
"""
from __future__ import annotations

from typing import Sequence

from PIL import Image
from torchvision import transforms

__all__ = ["ResizeCenterCrop", "evaluation_transform"]


class ResizeCenterCrop:
    """Resize the shorter side to ``size`` (bicubic), centre-crop to ``size x size``, as RGB.

    Args:
        size: side of the square output, in pixels.
    """

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        if not isinstance(img, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(img).__name__}")
        img = img.convert("RGB")
        if img.size != (self.size, self.size):
            w, h = img.size
            scale = self.size / min(w, h)
            img = img.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))), Image.BICUBIC)
            w, h = img.size
            left, top = (w - self.size) // 2, (h - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
        return img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


def evaluation_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> transforms.Compose:
    """PIL image -> normalised float tensor (3, size, size), as contrastkit evaluates.

    Args:
        size: the training input size (the checkpoint's ``image_size``).
        mean, std: the training normalisation (3 numbers each).
    """
    return transforms.Compose([ResizeCenterCrop(int(size)), transforms.ToTensor(),
                               transforms.Normalize([float(v) for v in mean], [float(v) for v in std])])
