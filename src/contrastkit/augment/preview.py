"""An image grid of augmented views (PNG, JPEG or WebP), to check an augmentation setting by eye."""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.utils import make_grid

from .batch import BatchAugment
from .config import resolve_normalize
from .convert import check_image_tensor, to_rgb

__all__ = ["save_preview", "unnormalize", "preview_format", "PREVIEW_FORMATS"]

#: file extension -> the PIL format written for it.
PREVIEW_FORMATS: dict[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def preview_format(path: str | os.PathLike) -> str:
    """The PIL image format that ``path``'s extension names (case-insensitive).

    Raises:
        ValueError: the extension is none of :data:`PREVIEW_FORMATS`, or this PIL cannot write it.
    """
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in PREVIEW_FORMATS:
        raise ValueError(f"the preview file must end in {', '.join(PREVIEW_FORMATS)} (the format written), "
                         f"got {os.fspath(path)!r}")
    fmt = PREVIEW_FORMATS[ext]
    from PIL import features

    if fmt == "WEBP" and not features.check("webp"):
        raise ValueError(f"this Pillow was built without WebP support; write {os.fspath(path)!r} as .png or .jpg")
    return fmt


def unnormalize(x: torch.Tensor, normalize: Any) -> torch.Tensor:
    """Undoes ``(x - mean) / std`` and clamps to [0, 1] for display.

    Args:
        x: normalised image(s).
        normalize: the ``(mean, std)`` pair (or name) that was applied, or None.

    Returns:
        A new tensor in [0, 1].

    Shape:
        x (..., 3, H, W) -> same.
    """
    norm = resolve_normalize(normalize)
    x = x.detach().float()
    if norm is not None:
        mean = torch.tensor(norm[0], device=x.device).view(3, 1, 1)
        std = torch.tensor(norm[1], device=x.device).view(3, 1, 1)
        x = x * std + mean
    return x.clamp(0.0, 1.0)


def _as_uint8(img: Any) -> torch.Tensor:
    if isinstance(img, Image.Image):
        return v2.functional.pil_to_tensor(to_rgb(img))  # (3, H, W) uint8
    return check_image_tensor(img).contiguous()


def save_preview(
    images: Sequence[Any] | torch.Tensor,
    transform: Callable,
    path: str | os.PathLike,
    n_views: int = 4,
    normalize: Any = "auto",
    padding: int = 2,
) -> torch.Tensor:
    """Writes an image grid: one row per image, columns = the original (resized) then ``n_views`` views.

    Args:
        images: PIL images or uint8 ``(C, H, W)`` tensors, or a uint8 batch ``(B, C, H, W)``.
        transform: a per-image view transform (e.g. :class:`SimCLRTransform`) or a
            :class:`BatchAugment`.
        path: output file; its extension picks the format (``.png``, ``.jpg``/``.jpeg``, ``.webp``). Parent
            folders are created; the file is written whole or not at all (a temporary file, renamed).
        n_views: views per image, >= 1.
        normalize: the normalisation to undo for display; ``"auto"`` reads the
            transform's ``normalize`` attribute (None if it has none).
        padding: pixels between cells.

    Returns:
        The grid that was written, float in [0, 1].

    Raises:
        ValueError: an unknown extension, no images, n_views < 1, or views of unequal size.
        TypeError: an image of an unsupported type.

    Shape:
        returned grid (3, H_grid, W_grid).
    """
    fmt = preview_format(path)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images.unbind(0))
    images = list(images)
    if not images:
        raise ValueError("save_preview needs at least one image, got none")
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be an int >= 1, got {n_views!r}")
    if isinstance(normalize, str) and normalize == "auto":
        normalize = getattr(transform, "normalize", None)

    if isinstance(transform, BatchAugment):
        batch = torch.stack([_as_uint8(img) for img in images])  # (N, 3, H, W); needs equal sizes
        views: list[torch.Tensor] = []
        while len(views) < n_views:
            views.extend(transform(batch))  # each (N, 3, S, S)
        per_image = [[v[i] for v in views[:n_views]] for i in range(len(images))]
    else:
        per_image = [[transform(img) for _ in range(n_views)] for img in images]

    size = tuple(per_image[0][0].shape[-2:])
    cells = []
    for img, row in zip(images, per_image):
        original = _as_uint8(img).float().div(255.0).unsqueeze(0)  # (1, 3, H, W)
        original = torch.nn.functional.interpolate(original, size=size, mode="bilinear", antialias=True, align_corners=False)
        cells.append(original[0].clamp(0.0, 1.0))
        for v in row:
            if tuple(v.shape[-2:]) != size:
                raise ValueError(f"all views must have the same size for a grid, got {tuple(v.shape)} and {size}")
            cells.append(unnormalize(v.cpu(), normalize))
    grid = make_grid(torch.stack(cells), nrow=n_views + 1, padding=padding, pad_value=1.0)  # (3, Hg, Wg)
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    array = grid.mul(255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (Hg, Wg, 3)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        Image.fromarray(array, mode="RGB").save(tmp, format=fmt)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return grid
