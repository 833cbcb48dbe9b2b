"""Dataset wrappers: multi-view training samples, decoded uint8 arrays, evaluation samples.

Augmentation randomness is derived from ``(seed, epoch, index)`` alone
(:func:`seed_for`), so the views of a sample do not depend on the worker that
makes them, the batch order, or where a resumed run picks up. That is what
makes mid-epoch resume bit-exact.
"""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info

__all__ = ["seed_for", "ViewDataset", "ArrayDataset", "EvalDataset", "decode_to_array", "stage_images",
           "batch_to_device", "resize_square"]

_MASK = (1 << 63) - 1


def seed_for(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` in ``epoch`` of a run seeded ``seed``."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK


class ViewDataset(Dataset):
    """Applies a (multi-view) transform to a source yielding (PIL image, label).

    Returns ``(views, label, index)`` with ``views`` a tensor (V, C, H, W) when the
    transform returns a list of V tensors, else the single tensor (C, H, W).
    Call :meth:`set_epoch` before each epoch (the DataLoader must not use
    persistent workers, so that workers see the new epoch).
    """

    def __init__(self, source: Dataset, transform: Callable, seed: int = 0) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        img, label = self.source[index]
        s = seed_for(self.seed, self.epoch, index)
        # The transforms draw from the default CPU generator only; seeding just it costs ~1 us, where
        # torch.manual_seed (which also seeds every accelerator backend) costs ~240 us, a fifth of a 32-px
        # two-view augmentation (benchmarks/seed_bench.py). The draws are the same as after torch.manual_seed(s).
        if get_worker_info() is not None:  # a worker's RNG is its own
            torch.default_generator.manual_seed(s)
            out = self.transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(s)
                out = self.transform(img)
        if isinstance(out, (list, tuple)):
            out = torch.stack(list(out))  # (V, C, H, W)
        return out, label, index


class ArrayDataset(Dataset):
    """Images held in memory as one uint8 tensor (N, 3, S, S), with labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 of shape (N, 3, S, S), got {images.dtype} {tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index]), index


def stage_images(images: torch.Tensor, device: torch.device, max_fraction: float = 0.25) -> torch.Tensor:
    """Where the training loop should keep decoded images so that each step's batch reaches ``device`` cheaply.

    On a GPU: the whole uint8 array on the GPU when it takes at most ``max_fraction`` of the free memory (CIFAR-10
    at 32 px is 154 MB), so a step gathers its batch there instead of copying it from the host. Otherwise, and on
    other devices, the array as it is (:func:`batch_to_device` then pins each gathered batch).

    Shape:
        images (N, C, S, S) uint8 -> the same, on the device or the host.
    """
    if device.type != "cuda":
        return images
    nbytes = images.numel() * images.element_size()
    free, _ = torch.cuda.mem_get_info(device)
    return images.to(device) if nbytes <= max_fraction * free else images


def batch_to_device(staged: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The images ``staged[idx]`` on ``device``: gathered where ``staged`` lives (see :func:`stage_images`); a
    batch gathered on the host for a GPU goes through pinned memory (PyTorch caches the pinned blocks), so the copy
    is asynchronous.

    Shape:
        staged (N, C, S, S), idx (B,) int64 on the host -> (B, C, S, S) on ``device``.
    """
    batch = staged[idx.to(staged.device, non_blocking=True)]
    if batch.device.type == "cpu" and device.type == "cuda":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


class EvalDataset(Dataset):
    """Evaluation samples ``(float tensor (3, S, S) normalised, label)``.

    Built either from a uint8 array (fast: no decoding) or from a source with a transform.
    """

    def __init__(self, images: torch.Tensor | Dataset, labels: torch.Tensor | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 transform: Callable | None = None) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform
        self.mean = torch.tensor(mean).view(3, 1, 1) if mean is not None else None
        self.std = torch.tensor(std).view(3, 1, 1) if std is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        if isinstance(self.images, torch.Tensor):
            x = self.images[index].float().div_(255.0)  # (3, S, S)
            if self.mean is not None:
                x = (x - self.mean) / self.std
            return x, int(self.labels[index])
        img, label = self.images[index]
        return self.transform(img), int(label)


def resize_square(img: Image.Image, size: int) -> torch.Tensor:
    """An RGB image as the uint8 tensor every frozen-feature protocol sees: the shorter side resized (bicubic)
    to ``size``, then centre-cropped to a square.

    Shape:
        -> (3, size, size) uint8.
    """
    if img.size != (size, size):
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.uint8)  # (S, S, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # (3, S, S)


class _Resized(Dataset):
    def __init__(self, source: Dataset, size: int) -> None:
        self.source, self.size = source, size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        img, label = self.source[index]
        return resize_square(img, self.size), int(label)


def array_cache_key(data: str, part: str) -> str | None:
    """The :func:`decode_to_array` cache key of one part (``train``, ``test``, ``train-native``) of a data set.

    ``digits`` is not cached (it is small and built in); any other data set or folder is keyed by its absolute
    path, so the same folder reached by another relative path shares the cache.
    """
    if data == "digits":
        return None
    return f"{os.path.abspath(os.path.expanduser(data))}/{part}"


def decode_to_array(source: Dataset, size: int, num_workers: int = 0, cache_key: str | None = None,
                    cache_dir: str = "~/.cache/contrastkit/arrays", progress: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image once into a uint8 tensor (N, 3, size, size) and labels (N,).

    With ``cache_key``, the arrays are stored under ``cache_dir`` and reused; for a source
    with ``paths`` (image files) the key includes each file's size and modification time, so
    a folder whose files changed is decoded again.
    """
    cache_file = None
    if cache_key:
        h = hashlib.sha1(f"{cache_key}/{len(source)}/{size}".encode())
        for path in getattr(source, "paths", None) or []:  # files replaced or edited: a new cache
            st = os.stat(path)
            h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
        digest = h.hexdigest()[:16]
        cache_file = Path(os.path.expanduser(cache_dir)) / f"{digest}.npz"
        if cache_file.is_file():
            try:
                with np.load(cache_file) as z:
                    return torch.from_numpy(z["images"]), torch.from_numpy(z["labels"])
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is rebuilt below
    if hasattr(source, "decode_size"):  # image files: JPEGs decoded at a reduced scale, down to ``size``
        source.decode_size = size
    loader = DataLoader(_Resized(source, size), batch_size=512, num_workers=num_workers)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=f"decoding {len(source)} images", leave=False, disable=None)  # none in a log
    images, labels = [], []
    for x, y in loader:
        images.append(x)
        labels.append(y)
    images_t = torch.cat(images) if images else torch.empty(0, 3, size, size, dtype=torch.uint8)
    labels_t = torch.cat(labels).long() if labels else torch.empty(0, dtype=torch.long)
    if cache_file is not None:
        # a name of its own per process: two processes decoding the same source at once (parallel experiments)
        # each write their own file, and the last rename wins with identical contents
        tmp = cache_file.with_name(f"{cache_file.stem}.tmp{os.getpid()}-{threading.get_ident()}.npz")
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, images=images_t.numpy(), labels=labels_t.numpy())
            os.replace(tmp, cache_file)
        except OSError as exc:  # a full disk or a read-only cache costs the next run a decode, not this run
            warnings.warn(f"could not cache the decoded images in {cache_file} ({exc}); they will be decoded "
                          f"again next time", stacklevel=2)
        finally:
            tmp.unlink(missing_ok=True)
    return images_t, labels_t
