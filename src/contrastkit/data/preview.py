"""A grid of augmented views of a data set's images (``contrastkit preview-augment``): what the augmentation does
to these images before any training."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..augment import SimCLRTransform, preset_for
from ..augment.preview import preview_format, preview_picture
from ..runtime.ownership import OutputFiles
from .sources import load_dataset

__all__ = ["preview_augment"]


def preview_augment(data: str, out: str | os.PathLike, *, data_root: str = "~/.cache/contrastkit/datasets",
                    preset: str = "auto", n_images: int = 6, n_views: int = 4, seed: int = 0,
                    skip_bad_files: bool = False, overwrite: bool = False) -> Path:
    """Save an image grid (the format of ``out``'s extension: .png, .jpg, .jpeg or .webp): each row an image (named
    by its class, or its file for unlabelled data) and ``n_views`` augmented views of it, each cell at least 96 px.
    ``skip_bad_files`` passes over unreadable images. ``out`` is a new file, or a grid an earlier preview wrote
    there (replaced only with ``overwrite``); never a file contrastkit did not write."""
    if n_images < 1 or n_views < 1:
        raise ValueError(f"--images and --views must be >= 1, got {n_images} and {n_views}")
    out = Path(out).expanduser()
    try:
        fmt = preview_format(out)
    except ValueError as exc:
        raise ValueError(f"--out: {exc}") from exc
    with OutputFiles(out.parent, [out.name], "preview-augment", "preview", overwrite) as files:
        splits = load_dataset(data, root=data_root, seed=seed, skip_bad_files=skip_bad_files)
        preset = preset_for(preset, splits.image_size)
        n = min(n_images, len(splits.train))
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(splits.train), generator=g)[:n].tolist()
        samples = [splits.train[i] for i in idx]
        torch.manual_seed(seed)
        transform = SimCLRTransform.from_preset(preset)
        _, picture = preview_picture([image for image, _ in samples], transform, n_views=n_views, min_cell=96,
                                     row_labels=[_name(splits, i, label) for i, (_, label) in zip(idx, samples)])
        picture.save(files.temp(out.name), format=fmt)
        files.publish()
    return out


def _name(splits, index: int, label: int) -> str:
    """A row's name: the image's class, or its file name when the data have no classes."""
    if splits.labelled and 0 <= label < len(splits.classes):
        return str(splits.classes[label])
    paths = getattr(splits.train, "paths", None)
    return Path(paths[index]).name if paths else f"image {index}"
