"""The space near-duplicates are compared in, and the score their threshold applies to.

Two changes to plain cosine similarity of h, each measured on planted copies of CIFAR-10
(benchmarks/README.md, "Near-duplicates against a ground truth", the ablation):

* **Whitening.** The vectors (the near-duplicate vectors of :mod:`.views`) are centred on the
  collection's mean and whitened by its covariance (PCA whitening; eigenvalues floored at
  1e-4 of the largest), then scaled to unit length. A briefly trained encoder puts most images in a
  narrow cone (cosine 0.98 to their nearest neighbour); whitening spreads the directions the
  collection varies little in, where a copy and its original still agree. Fitted only when the
  collection has at least 10 D images; smaller ones are centred only.
* **A score relative to the neighbourhood.** An image in a crowded region is close to many
  images, one in an empty region to none; a fixed cosine threshold links too many of the first and
  too few of the second. The score of a pair is

      score(x, y) = cos(x, y) - (r(x | not y) + r(y | not x)) / 2,

  r(x | not y) the cosine of x to its 5th nearest image other than x and y (CSLS, Conneau et al.
  2018, with the k-th neighbour rather than a mean so that a few copies of x do not raise it; the
  partner is left out so that a pair scores the same whether the copy is in the index or, as in
  calibration, made on the side). A copy scores high because it is far closer to its original than
  the original's neighbourhood is. Leaving y out only matters when y is among x's 5 nearest, so
  each row keeps its 5th and 6th nearest similarities.

:class:`DuplicateSpace` holds the mean, the whitening matrix and every row's two references; it is
computed from the index's vectors (no model needed) and kept in the index as ``near_duplicates.<g>.npz``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DuplicateSpace", "NEIGHBOUR_RANK"]

#: r is the similarity to the NEIGHBOUR_RANK-th nearest other image.
NEIGHBOUR_RANK = 5
#: Whitening needs this many images per dimension; below, vectors are only centred.
_MIN_ROWS_PER_DIM = 10
_EIGEN_FLOOR = 1e-4
_FIT_ROWS = 200_000  # whitening is fitted on at most this many rows (a seeded sample)
_BLOCK_ELEMENTS = 1 << 24


def _whitening(vectors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """The mean and whitening matrix of ``vectors`` and whether it whitens (else identity).

    Shape:
        vectors (N, D) -> mean (D,), matrix (D, D).
    """
    n, d = vectors.shape
    pick = np.sort(np.random.default_rng(seed).choice(n, _FIT_ROWS, replace=False)) if n > _FIT_ROWS else slice(None)
    x = torch.from_numpy(np.asarray(vectors[pick], np.float64))  # (n', D)
    mean = x.mean(0)
    if x.shape[0] < _MIN_ROWS_PER_DIM * d:
        return mean.float().numpy(), np.eye(d, dtype=np.float32), False
    centred = x - mean
    eigenvalues, basis = torch.linalg.eigh(centred.T @ centred / len(centred))  # (D,), (D, D)
    scale = (eigenvalues.clamp_min(0) + _EIGEN_FLOOR * eigenvalues.max()).rsqrt()
    matrix = basis @ torch.diag(scale) @ basis.T  # (D, D), symmetric
    return mean.float().numpy(), matrix.float().numpy(), True


@dataclass
class DuplicateSpace:
    """The near-duplicate space of an index (see the module docstring).

    Attributes:
        mean: (D,) the collection's mean vector.
        whitening: (D, D) the whitening matrix (identity when the collection is too small).
        reference: (N, 2) each row's cosine, in this space, to its ``rank``-th and ``rank + 1``-th nearest other
            rows (zeros when ``rank`` is 0).
        rank: the neighbour r is taken at (5, or N - 2 for fewer than 7 images: 0 for 2 images, where the
            score is the cosine).
        whitened: whether ``whitening`` whitens.
    """

    mean: np.ndarray
    whitening: np.ndarray
    reference: np.ndarray
    rank: int
    whitened: bool

    def transform(self, vectors: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Vectors of the index's kind in this space, unit length.

        Shape:
            (n, D) -> (n, D) float32.
        """
        x = vectors.float() if isinstance(vectors, torch.Tensor) else torch.from_numpy(np.asarray(vectors, np.float32))
        return F.normalize((x - torch.from_numpy(self.mean)) @ torch.from_numpy(self.whitening), dim=1)

    @classmethod
    def fit(cls, vectors: np.ndarray, rank: int = NEIGHBOUR_RANK) -> "DuplicateSpace":
        """Fit the space on an index's near-duplicate vectors and compute every row's r.

        Raises:
            ValueError: fewer than 2 rows.

        Shape:
            vectors (N, D).
        """
        n = vectors.shape[0]
        if n < 2:
            raise ValueError(f"near-duplicates need at least 2 images to compare, got {n}")
        mean, matrix, whitened = _whitening(vectors)
        space = cls(mean, matrix, np.zeros((n, 2), np.float32), min(rank, n - 2), whitened)
        space.reference = space.neighbour_similarity(space.transform(vectors), exclude_self=True)
        return space

    @torch.no_grad()
    def neighbour_similarity(self, queries: torch.Tensor, exclude_self: bool = False,
                             index: torch.Tensor | None = None, exclude: torch.Tensor | None = None
                             ) -> np.ndarray:
        """Each query's cosine to its ``rank``-th and ``rank + 1``-th nearest rows of ``index`` (default: the
        queries themselves).

        With ``exclude_self`` query i is row i of the index and is not its own neighbour; ``exclude`` (Q,)
        names one more row per query to leave out.

        Shape:
            queries (Q, D), index (N, D) -> (Q, 2).
        """
        rows = queries if index is None else index
        out = np.zeros((queries.shape[0], 2), np.float32)
        if self.rank < 1:
            return out
        step = max(1, _BLOCK_ELEMENTS // max(1, rows.shape[0]))
        for lo in range(0, queries.shape[0], step):
            sims = queries[lo:lo + step] @ rows.T  # (b, N)
            at = torch.arange(sims.shape[0])
            if exclude_self:
                sims[at, torch.arange(lo, lo + sims.shape[0])] = -float("inf")
            if exclude is not None:
                sims[at, exclude[lo:lo + step]] = -float("inf")
            top = sims.topk(min(self.rank + 1, sims.shape[1]), dim=1).values  # (b, rank + 1)
            out[lo:lo + step, 0] = top[:, self.rank - 1].numpy()
            out[lo:lo + step, 1] = top[:, min(self.rank, top.shape[1] - 1)].numpy()
        return out

    def pair_offsets(self, sims: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(r(x | not y) + r(y | not x)) / 2 for each x of ``rows`` and y of ``cols``, given their cosines.

        Shape:
            sims (b, m), rows (b,), cols (m,) indices into the index -> (b, m).
        """
        ref = torch.from_numpy(self.reference)  # (N, 2)
        r_row, r_col = ref[rows], ref[cols]  # (b, 2), (m, 2)
        # y is among x's `rank` nearest exactly when cos(x, y) reaches x's rank-th similarity
        x_part = torch.where(sims >= r_row[:, :1], r_row[:, 1:], r_row[:, :1])  # (b, m)
        y_part = torch.where(sims >= r_col[None, :, 0], r_col[None, :, 1], r_col[None, :, 0])  # (b, m)
        return (x_part + y_part) / 2

    def scores(self, sims: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The scores of the pairs whose cosines are ``sims``. Shape: as :meth:`pair_offsets`."""
        return sims - self.pair_offsets(sims, rows, cols)

    def save(self, path: str | os.PathLike) -> None:
        """Write the space to ``path``, whose name ends in ``.npz`` (an index names it only once it is written,
        :mod:`.additions`)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"the near-duplicate space is saved as an .npz file, got {path}")
        np.savez(path, mean=self.mean, whitening=self.whitening, reference=self.reference,
                 rank=np.int64(self.rank), whitened=np.bool_(self.whitened))

    @classmethod
    def load(cls, path: str | os.PathLike, count: int, dim: int) -> "DuplicateSpace | None":
        """The space stored at ``path``, or None when it is missing or belongs to another state of the index."""
        try:
            with np.load(path, allow_pickle=False) as z:
                space = cls(z["mean"], z["whitening"], z["reference"], int(z["rank"]), bool(z["whitened"]))
        except (OSError, KeyError, ValueError):
            return None
        if space.reference.shape != (count, 2) or space.mean.shape != (dim,) or space.whitening.shape != (dim, dim):
            return None
        return space
