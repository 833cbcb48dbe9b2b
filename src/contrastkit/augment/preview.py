"""An image grid of augmented views (PNG, JPEG or WebP), to check an augmentation setting by eye."""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms import v2
from torchvision.utils import make_grid

from .batch import BatchAugment
from .config import resolve_normalize
from .convert import check_image_tensor, to_rgb

__all__ = ["save_preview", "preview_picture", "unnormalize", "preview_format", "PREVIEW_FORMATS"]

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


def _with_labels(picture: Image.Image, rows: list[str], columns: list[str], row_step: int, col_step: int,
                 padding: int) -> Image.Image:
    """``picture`` (a grid of cells ``row_step`` x ``col_step`` apart) with a header row of column names and a left
    column of row names, in black on white."""
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture)
    left = max(draw.textlength(name, font=font) for name in rows) + 8
    top = 16
    canvas = Image.new("RGB", (picture.width + int(left), picture.height + top), "white")
    canvas.paste(picture, (int(left), top))
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(columns):
        draw.text((int(left) + padding + j * col_step, 2), name, fill="black", font=font)
    for i, name in enumerate(rows):
        draw.text((4, top + padding + i * row_step + row_step // 2 - 6), name, fill="black", font=font)
    return canvas


def _as_uint8(img: Any) -> torch.Tensor:
    if isinstance(img, Image.Image):
        return v2.functional.pil_to_tensor(to_rgb(img))  # (3, H, W) uint8
    return check_image_tensor(img).contiguous()


def _views(images: list, transform: Callable, n_views: int) -> list[list[torch.Tensor]]:
    """``n_views`` views of every image, from a per-image transform or a :class:`BatchAugment` (equal sizes)."""
    if not isinstance(transform, BatchAugment):
        return [[transform(img) for _ in range(n_views)] for img in images]
    batch = torch.stack([_as_uint8(img) for img in images])  # (N, 3, H, W); needs equal sizes
    views: list[torch.Tensor] = []
    while len(views) < n_views:
        views.extend(transform(batch))  # each (N, 3, S, S)
    return [[v[i] for v in views[:n_views]] for i in range(len(images))]


def _cells(images: list, per_image: list[list[torch.Tensor]], normalize: Any,
           size: tuple[int, ...]) -> list[torch.Tensor]:
    """The grid's cells row by row: each original resized to the views' ``size``, then its views, in [0, 1]."""
    cells = []
    for img, row in zip(images, per_image):
        original = _as_uint8(img).float().div(255.0).unsqueeze(0)  # (1, 3, H, W)
        original = torch.nn.functional.interpolate(original, size=size, mode="bilinear", antialias=True,
                                                   align_corners=False)
        cells.append(original[0].clamp(0.0, 1.0))
        for v in row:
            if tuple(v.shape[-2:]) != size:
                raise ValueError(f"all views must have the same size for a grid, got {tuple(v.shape)} and {size}")
            cells.append(unnormalize(v.cpu(), normalize))
    return cells


def _save_whole(picture: Image.Image, path: str, fmt: str) -> None:
    """Write ``picture`` whole or not at all: a temporary file of this process beside ``path``, then renamed."""
    parent = os.path.dirname(path)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        picture.save(tmp, format=fmt)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # only this process's own temporary file
            os.unlink(tmp)


def preview_picture(
    images: Sequence[Any] | torch.Tensor,
    transform: Callable,
    n_views: int = 4,
    normalize: Any = "auto",
    padding: int = 2,
    row_labels: Sequence[str] | None = None,
    min_cell: int = 0,
) -> tuple[torch.Tensor, Image.Image]:
    """An image grid: one row per image, columns = the original (resized) then ``n_views`` views.

    Args:
        images: PIL images or uint8 ``(C, H, W)`` tensors, or a uint8 batch ``(B, C, H, W)``.
        transform: a per-image view transform (e.g. :class:`SimCLRTransform`) or a
            :class:`BatchAugment`.
        n_views: views per image, >= 1.
        normalize: the normalisation to undo for display; ``"auto"`` reads the
            transform's ``normalize`` attribute (None if it has none).
        padding: pixels between cells.
        row_labels: a name per image (its class or file): the picture then gets a column of names on the left and
            a header row (``original``, ``view 1``, ...).
        min_cell: draw each cell at least this many pixels wide, scaled up by a whole factor without smoothing
            (32-px views are hard to see at their own size); 0 keeps the views' size.

    Returns:
        ``(grid, picture)``: the grid of images (without the labels), float in [0, 1], at the views' size, and
        the RGB picture to save (scaled, with the labels).

    Raises:
        ValueError: no images, n_views < 1, views of unequal size, or a row label count that is not the images'.
        TypeError: an image of an unsupported type.

    Shape:
        grid (3, H_grid, W_grid).
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images.unbind(0))
    images = list(images)
    if not images:
        raise ValueError("save_preview needs at least one image, got none")
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be an int >= 1, got {n_views!r}")
    if row_labels is not None and len(row_labels) != len(images):
        raise ValueError(f"row_labels has {len(row_labels)} names for {len(images)} images")
    if isinstance(normalize, str) and normalize == "auto":
        normalize = getattr(transform, "normalize", None)

    per_image = _views(images, transform, n_views)  # per image: n_views views (3, S, S)
    size = tuple(per_image[0][0].shape[-2:])
    cells = _cells(images, per_image, normalize, size)
    grid = make_grid(torch.stack(cells), nrow=n_views + 1, padding=padding, pad_value=1.0)  # (3, Hg, Wg)
    array = grid.mul(255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (Hg, Wg, 3)
    picture = Image.fromarray(array, mode="RGB")
    scale = max(1, -(-min_cell // size[1])) if min_cell else 1
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    if row_labels is not None:
        columns = ["original"] + [f"view {i + 1}" for i in range(n_views)]
        picture = _with_labels(picture, list(row_labels), columns, (size[0] + padding) * scale,
                               (size[1] + padding) * scale, padding * scale)
    return grid, picture


def save_preview(
    images: Sequence[Any] | torch.Tensor,
    transform: Callable,
    path: str | os.PathLike,
    n_views: int = 4,
    normalize: Any = "auto",
    padding: int = 2,
    row_labels: Sequence[str] | None = None,
    min_cell: int = 0,
) -> torch.Tensor:
    """Write the grid of :func:`preview_picture` (the same arguments) to ``path``, whose extension picks the format
    (``.png``, ``.jpg``/``.jpeg``, ``.webp``). Parent folders are created; the file is written whole or not at all
    (a temporary file, renamed). Returns the grid.

    Raises:
        ValueError: an unknown extension, or what :func:`preview_picture` raises.
    """
    fmt = preview_format(path)
    grid, picture = preview_picture(images, transform, n_views, normalize, padding, row_labels, min_cell)
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    _save_whole(picture, path, fmt)
    return grid
