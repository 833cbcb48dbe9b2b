"""Queries against an index: the nearest images to each query image, by cosine similarity of h."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.sources import open_rgb
from ..data.views import resize_square
from ..runtime import resolve_device
from .encoder import FrozenEncoder, load_frozen_encoder
from .index import ImageIndex, check_k, list_images
from .pixels import pixel_hash
from .views import view_mean

__all__ = ["search", "SearchResults", "query_paths", "embed_images", "embed_pil"]


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


def _read_queries(encoder: FrozenEncoder, paths: list[str]) -> tuple[list[torch.Tensor], list[np.ndarray],
                                                                      list[str], list[dict[str, str]]]:
    """Each readable query as the index's images were read (decoded at the encoder's side, resized, cropped), its
    content hash (:mod:`.pixels`); returns (images, hashes, the readable paths, the others with their reason)."""
    images, hashes, kept, bad = [], [], [], []
    for p in paths:
        try:
            img = open_rgb(p, encoder.image_size)
        except ValueError as exc:
            bad.append({"path": p, "reason": str(exc).split(": ", 1)[-1]})
            continue
        images.append(resize_square(img, encoder.image_size))  # (3, S, S) uint8
        hashes.append(pixel_hash(img))
        kept.append(p)
    return images, hashes, kept, bad


def embed_images(encoder: FrozenEncoder, paths: list[str], device: str | torch.device = "cpu",
                 batch_size: int = 256) -> torch.Tensor:
    """Unit vectors of a few images (the queries), preprocessed as the index's images were.

    Raises:
        ValueError: naming the files that are not readable images.

    Shape:
        -> (len(paths), D).
    """
    images, _, _, bad = _read_queries(encoder, paths)
    if bad:
        raise ValueError(_unreadable(bad))
    return _embed_tensors(encoder, images, device, batch_size)


def _unreadable(bad: list[dict[str, str]]) -> str:
    """The message naming unreadable query files (the first three)."""
    shown = "; ".join(f"{b['path']} ({b['reason']})" for b in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"query {'file is' if len(bad) == 1 else 'files are'} not a readable image: {shown}{more}"


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


class SearchResults(list):
    """What :func:`search` returns: a list with one entry per query image read, and :attr:`skipped`, the query
    files that could not be read, each ``{"path", "reason"}``."""

    def __init__(self, results: list[dict[str, Any]], skipped: list[dict[str, str]]) -> None:
        super().__init__(results)
        self.skipped = skipped


def _same_image_rows(index: ImageIndex, paths: list[str], hashes: list[np.ndarray]) -> list[list[int]]:
    """For each query, the index rows that are the query itself: the same file, or the same decoded pixels (by the
    content hashes the index holds; an index without them: the same file only). One pass over the index."""
    same: list[list[int]] = [[] for _ in paths]
    at = {p: i for i, p in enumerate(paths)}
    for r, p in enumerate(index.paths):
        if p in at:
            same[at[p]].append(r)
    stored = index.pixel_hashes()
    if stored is not None and hashes:
        rows = np.ascontiguousarray(stored).view(np.uint64)  # (N, 2): a hash as two words
        queries = np.stack(hashes).view(np.uint64)  # (Q, 2)
        for r in np.flatnonzero(np.isin(rows[:, 0], queries[:, 0])).tolist():  # candidates by the first word
            for i in np.flatnonzero((queries == rows[r]).all(axis=1)).tolist():
                if r not in same[i]:
                    same[i].append(r)
    return [sorted(s) for s in same]


def _check_checkpoint(idx: ImageIndex, checkpoint) -> None:
    if checkpoint is None and not Path(idx.info["checkpoint"]).exists():
        raise ValueError(f"the index's checkpoint {idx.info['checkpoint']} no longer exists; pass --checkpoint with "
                         f"the model the index was built with, or rebuild the index with another one: contrastkit "
                         f"index --out {idx.root} --rebuild --checkpoint CK")


def search(index: str | os.PathLike | ImageIndex, query: str | os.PathLike, k: int = 10, *,
           checkpoint: str | os.PathLike | None = None, device: str = "auto", backend: str = "auto",
           nprobe: int | None = None, exclude_self: bool = True) -> SearchResults:
    """The ``k`` nearest indexed images to each query image.

    A query that is itself in the index (the same file, or an image with the same decoded pixels) is not its own
    neighbour: those rows are left out, and named in the entry's ``left_out``. In a folder of queries, a file that
    cannot be read is skipped and listed in :attr:`SearchResults.skipped` (as ``index`` and ``embed`` skip bad
    files); a single query file that cannot be read is an error.

    Args:
        index: an index folder (or a loaded :class:`ImageIndex`).
        query: an image file, or a folder of them.
        k: neighbours per query, at most the index's size.
        checkpoint: the model that embeds the queries (default: the index's checkpoint); it must be the
            index's model.
        device: where the encoder runs.
        backend: ``auto``, ``torch`` or ``faiss`` (flat indexes; IVF/HNSW always use FAISS).
        nprobe: IVF lists visited per query (default: the index's).
        exclude_self: leave the query's own rows out of its neighbours (False: keep them).

    Returns:
        A :class:`SearchResults`: ``[{"query": path, "neighbours": [{"path": ..., "similarity": ...}, ...],
        "left_out": [path, ...]}, ...]``, one entry per readable query image in path order, neighbours in
        decreasing similarity.

    Raises:
        ValueError: a missing or unreadable query file, a folder without images or without a readable one, k out of
            range, a damaged index; :class:`contrastkit.search.IndexMismatchError` for another model than the
            index's.
    """
    idx = index if isinstance(index, ImageIndex) else ImageIndex.load(index, backend=backend, nprobe=nprobe)
    check_k(k, len(idx))
    paths = query_paths(query)
    _check_checkpoint(idx, checkpoint)
    encoder = load_frozen_encoder(checkpoint or idx.info["checkpoint"], projection=idx.info["what"] == "z")
    idx.check_encoder(encoder)
    images, hashes, kept, bad = _read_queries(encoder, paths)
    if not kept:
        raise ValueError(_unreadable(bad) if len(paths) == 1 else
                         f"none of the {len(paths)} query files can be read; {_unreadable(bad)}")
    vectors = _embed_tensors(encoder, images, resolve_device(device, "--device"), 256)
    same = _same_image_rows(idx, kept, hashes) if exclude_self else [[] for _ in kept]
    fetch = min(len(idx), k + max(len(s) for s in same))
    sims, rows = idx.search_vectors(vectors, fetch)  # (Q, fetch), (Q, fetch)
    results = []
    for q, sim, row, own in zip(kept, sims.tolist(), rows.tolist(), same):
        found = [(r, s) for s, r in zip(sim, row) if r >= 0 and r not in own][:k]
        results.append({"query": q, "neighbours": [{"path": idx.paths[r], "similarity": round(float(s), 6)}
                                                   for r, s in found],
                        "left_out": [idx.paths[r] for r in own]})
    return SearchResults(results, bad)
