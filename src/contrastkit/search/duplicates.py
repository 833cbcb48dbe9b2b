"""Near-duplicate groups in an index: connected components of the pairs with cosine similarity >= a threshold.

Every pair is compared exactly, a block of rows at a time against the rows after them, so memory
is bounded by one (rows, N) block of similarities whatever N is. Two images are in the same group
when a chain of near-duplicate pairs links them (union-find over the pairs found, and over groups
known beforehand, such as exact duplicates). The threshold that
``contrastkit search --near-duplicates`` uses by default is calibrated (:mod:`.dedup`).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .index import ImageIndex

__all__ = ["near_duplicate_groups", "find_near_duplicates", "check_threshold", "MAX_PAIRS_PER_ENTRY"]

_BLOCK_ELEMENTS = 1 << 24  # similarities computed at once (64 MB of float32)
#: Above this many pairs per entry the threshold links most of the collection: it is refused as too low.
MAX_PAIRS_PER_ENTRY = 50


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 <= threshold <= 1.0:
        raise ValueError(f"the near-duplicate threshold must be a cosine similarity in [-1, 1], got {threshold!r}")
    return float(threshold)


@torch.no_grad()
def near_duplicate_groups(vectors: np.ndarray | torch.Tensor, threshold: float,
                          block_elements: int = _BLOCK_ELEMENTS, linked: Sequence[Sequence[int]] = (),
                          score: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                          ) -> list[list[int]]:
    """Groups of rows linked by pairs with inner product (or a score made from it) >= ``threshold``.

    Args:
        vectors: unit rows (a numpy array, possibly memory-mapped, or a tensor).
        threshold: the cosine similarity (or score) at which two rows count as near-duplicates.
        block_elements: similarities held at once (sets the rows per block).
        linked: groups of rows that belong together whatever their similarity (exact duplicates).
        score: maps a block of inner products (b, m) and the row and column indices (b,), (m,) to the scores
            compared with the threshold (:meth:`contrastkit.search.dup_space.DuplicateSpace.scores`).

    Returns:
        Groups of at least two row indices, each ascending, ordered by their first row.

    Raises:
        ValueError: a threshold outside [-1, 1], or so low that it links more than
            :data:`MAX_PAIRS_PER_ENTRY` pairs per row.

    Shape:
        vectors (N, D).
    """
    t = check_threshold(threshold) if score is None else float(threshold)
    x = vectors.float() if isinstance(vectors, torch.Tensor) else torch.from_numpy(np.array(vectors, np.float32))
    # x: (N, D), a copy in memory (a memory-mapped index is read once)
    n = x.shape[0]
    rows = max(1, block_elements // max(1, n))
    uf, pairs = _UnionFind(n), 0
    for group in linked:
        for r in group[1:]:
            uf.union(int(group[0]), int(r))
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        sims = x[lo:hi] @ x[lo:].T  # (r, N - lo)
        if score is not None:
            sims = score(sims, torch.arange(lo, hi), torch.arange(lo, n))
        later = torch.arange(lo, n)[None, :] > torch.arange(lo, hi)[:, None]  # (r, N - lo): pairs i < j only
        i, j = torch.nonzero((sims >= t) & later, as_tuple=True)
        pairs += i.numel()
        if pairs > MAX_PAIRS_PER_ENTRY * n:
            raise ValueError(f"threshold {t} links more than {MAX_PAIRS_PER_ENTRY * n} pairs among {n} images, "
                             f"so it finds similar images rather than near-duplicates; use a higher threshold, "
                             f"or let contrastkit calibrate one (search --near-duplicates auto)")
        for a, b in zip((i + lo).tolist(), (j + lo).tolist()):
            uf.union(a, b)
    groups: dict[int, list[int]] = {}
    for r in range(n):
        groups.setdefault(uf.find(r), []).append(r)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def find_near_duplicates(index: str | os.PathLike | ImageIndex, threshold: float) -> list[list[str]]:
    """Groups of near-duplicate image paths in an index (see :func:`near_duplicate_groups`).

    Raises:
        ValueError: a bad threshold or a missing/damaged index.
    """
    check_threshold(threshold)
    idx = index if isinstance(index, ImageIndex) else ImageIndex.load(index, backend="torch")
    return [[idx.paths[r] for r in group] for group in near_duplicate_groups(idx.vectors, threshold)]
