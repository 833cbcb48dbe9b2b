"""Content hashes of decoded pixels: two files hash alike exactly when they decode to the same RGB image.

A hash is BLAKE2b (16 bytes) of the image's size and its 8-bit RGB pixels as they are decoded for embedding
(:func:`contrastkit.data.sources.open_rgb`), so the same picture saved as PNG and as BMP, or copied under another
name, hashes alike, while a JPEG re-encoding (other pixels) does not. A JPEG at least twice the encoder's input
side is decoded at a reduced scale (``Image.draft``) and hashed as decoded: the same JPEG file under two names
hashes alike, while a lossless copy of it may not (it is then found by its near-duplicate score). An index stores
one hash per row (``pixel_hashes.<g>.npy``); exact duplicates are the rows that share one, found whatever the
similarity threshold.
"""
from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

__all__ = ["HASH_BYTES", "pixel_hash", "exact_duplicate_groups"]

HASH_BYTES = 16


def pixel_hash(img: Image.Image) -> np.ndarray:
    """The content hash of an image's RGB pixels (other modes are converted first). Shape: -> (16,) uint8."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    h = hashlib.blake2b(f"{img.width}x{img.height};".encode(), digest_size=HASH_BYTES)
    h.update(img.tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()


def exact_duplicate_groups(hashes: np.ndarray) -> list[list[int]]:
    """Groups of at least two rows with the same hash (an all-zero row, an unknown hash, matches nothing).

    Shape:
        hashes (N, 16) uint8 -> groups of row indices, each ascending, ordered by their first row.
    """
    if hashes.ndim != 2 or hashes.shape[1] != HASH_BYTES:
        raise ValueError(f"hashes must have shape (N, {HASH_BYTES}), got {hashes.shape}")
    keys = np.ascontiguousarray(hashes).view(f"V{HASH_BYTES}").ravel()  # (N,) one opaque key per row
    known = np.flatnonzero(np.asarray(hashes).any(axis=1))
    order = known[np.argsort(keys[known], kind="stable")]
    groups, start = [], 0
    for i in range(1, len(order) + 1):
        if i == len(order) or keys[order[i]] != keys[order[start]]:
            if i - start > 1:
                groups.append(sorted(order[start:i].tolist()))
            start = i
    return sorted(groups, key=lambda g: g[0])
