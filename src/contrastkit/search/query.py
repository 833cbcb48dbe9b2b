"""Queries against an index: the nearest images to each query image, by cosine similarity of h."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..data.sources import open_rgb
from ..data.views import resize_square
from ..runtime import resolve_device
from .encoder import FrozenEncoder, load_frozen_encoder
from .index import ImageIndex, check_k, list_images
from .views import view_mean

__all__ = ["search", "query_paths", "embed_images", "embed_pil"]


def query_paths(query: str | os.PathLike) -> list[str]:
    """The query images: ``query`` itself when it is a file, else every image file under the folder.

    Raises:
        ValueError: ``query`` does not exist, or is a folder without image files.
    """
    path = Path(os.path.expanduser(os.fspath(query)))
    if path.is_file():
        return [str(path.resolve())]
    if path.is_dir():
        return list_images(path, what="--query")
    raise ValueError(f"--query {os.fspath(query)!r} does not exist (expected an image file or a folder of images)")


@torch.no_grad()
def embed_images(encoder: FrozenEncoder, paths: list[str], device: str | torch.device = "cpu",
                 batch_size: int = 256) -> torch.Tensor:
    """Unit vectors of a few images (the queries), preprocessed as the index's images were.

    Raises:
        ValueError: naming the files that are not readable images.

    Shape:
        -> (len(paths), D).
    """
    images, bad = [], []
    for p in paths:
        try:
            images.append(resize_square(open_rgb(p, encoder.image_size), encoder.image_size))  # (3, S, S) uint8
        except ValueError as exc:
            bad.append(f"{p} ({str(exc).split(': ', 1)[-1]})")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ValueError(f"query {'file is' if len(bad) == 1 else 'files are'} not a readable image: "
                         f"{'; '.join(bad[:3])}{more}")
    return _embed_tensors(encoder, images, device, batch_size)


def embed_pil(encoder: FrozenEncoder, images: list[Image.Image], device: str | torch.device = "cpu",
              batch_size: int = 256, dup_views: bool = False) -> torch.Tensor:
    """Unit vectors of RGB images held in memory, preprocessed as the index's images were; with ``dup_views``
    their near-duplicate vectors (:mod:`.views`) instead of h.

    Shape:
        -> (len(images), D).
    """
    return _embed_tensors(encoder, [resize_square(img, encoder.image_size) for img in images], device, batch_size,
                          dup_views)


@torch.no_grad()
def _embed_tensors(encoder: FrozenEncoder, images: list[torch.Tensor], device: str | torch.device,
                   batch_size: int, dup_views: bool = False) -> torch.Tensor:
    """Shape: images Q x (3, S, S) uint8 -> (Q, D) unit rows."""
    dev = torch.device(device)
    encoder.to(dev)
    mean = torch.tensor(encoder.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std).view(1, 3, 1, 1)
    out = []
    for lo in range(0, len(images), batch_size):
        x = (torch.stack(images[lo:lo + batch_size]).float() / 255.0 - mean) / std  # (B, 3, S, S)
        y = view_mean(encoder.module, x.to(dev)) if dup_views else encoder.module(x.to(dev))
        out.append(y.float().cpu())  # (B, D)
    return F.normalize(torch.cat(out), dim=1)  # (Q, D)


def search(index: str | os.PathLike | ImageIndex, query: str | os.PathLike, k: int = 10, *,
           checkpoint: str | os.PathLike | None = None, device: str = "auto", backend: str = "auto",
           nprobe: int | None = None) -> list[dict[str, Any]]:
    """The ``k`` nearest indexed images to each query image.

    Args:
        index: an index folder (or a loaded :class:`ImageIndex`).
        query: an image file, or a folder of them.
        k: neighbours per query, at most the index's size.
        checkpoint: the model that embeds the queries (default: the index's checkpoint); it must be the
            index's model.
        device: where the encoder runs.
        backend: ``auto``, ``torch`` or ``faiss`` (flat indexes; IVF/HNSW always use FAISS).
        nprobe: IVF lists visited per query (default: the index's).

    Returns:
        ``[{"query": path, "neighbours": [{"path": ..., "similarity": ...}, ...]}, ...]``, one entry per query
        image in path order, neighbours in decreasing similarity.

    Raises:
        ValueError: a missing or non-image query, an empty folder, k out of range, a damaged index;
            :class:`contrastkit.search.IndexMismatchError` for another model than the index's.
    """

    idx = index if isinstance(index, ImageIndex) else ImageIndex.load(index, backend=backend, nprobe=nprobe)
    check_k(k, len(idx))
    paths = query_paths(query)
    if checkpoint is None and not Path(idx.info["checkpoint"]).exists():
        raise ValueError(f"the index's checkpoint {idx.info['checkpoint']} no longer exists; pass --checkpoint with "
                         f"the model the index was built with, or rebuild the index with another one: contrastkit "
                         f"index --out {idx.root} --rebuild --checkpoint CK")
    encoder = load_frozen_encoder(checkpoint or idx.info["checkpoint"], projection=idx.info["what"] == "z")
    idx.check_encoder(encoder)
    vectors = embed_images(encoder, paths, resolve_device(device, "--device"))
    sims, rows = idx.search_vectors(vectors, k)  # (Q, k), (Q, k)
    return [{"query": q, "neighbours": [{"path": idx.paths[r], "similarity": round(float(s), 6)}
                                        for s, r in zip(sim.tolist(), row.tolist()) if r >= 0]}
            for q, sim, row in zip(paths, sims, rows)]
