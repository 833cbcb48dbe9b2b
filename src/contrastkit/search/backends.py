"""Nearest neighbours by cosine similarity over L2-normalised vectors: exact in torch, or FAISS.

* :func:`exact_topk`: exact search as chunked matrix products in torch, the index read a chunk
  at a time (it may be a memory-mapped array), so memory stays bounded.
* :class:`FaissSearcher`: FAISS (optional extra ``faiss``) with an inner-product index:
  ``flat`` (exact), ``ivf`` (inverted lists, ``nprobe`` of them visited per query) or ``hnsw``
  (a proximity graph, ``efSearch`` candidates kept per query). IVF and HNSW trade recall for speed;
  :func:`recall_at_k` measures it against exact search, and :mod:`.tuning` chooses the search
  parameter for a recall target. A saved IVF or HNSW index is opened memory-mapped (FAISS's
  ``IO_FLAG_MMAP_IFC``): its vectors are read from the file as searches touch them, not all at once.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["KINDS", "exact_topk", "FaissSearcher", "faiss_available", "require_faiss", "recall_at_k",
           "default_nlist"]

#: Index kinds: exact search, inverted lists, proximity graph.
KINDS = ("flat", "ivf", "hnsw")
_CHUNK_ELEMENTS = 1 << 24  # similarities computed at once (64 MB of float32)
_TRAIN_POINTS_PER_LIST = 64


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def require_faiss(why: str) -> Any:
    """The faiss module, or a RuntimeError that names the extra to install."""
    try:
        import faiss
    except ImportError as exc:
        raise RuntimeError(f"{why} needs FAISS; install it with: pip install 'contrastkit[faiss]' "
                          f"(or pip install faiss-cpu)") from exc
    return faiss


#: Up to this many queries, search runs on one thread: a handful of queries is a memory-bound matrix-vector
#: product that more threads hardly speed up, and on a busy machine their start-up dominates (50,000 x 128,
#: 2 threads at load 15 on 2 cores: 24-36 ms per query against 1 ms on one thread; benchmarks/search_bench.py).
FEW_QUERIES = 4


@contextlib.contextmanager
def _threads_for(n_queries: int, faiss: Any = None) -> Iterator[None]:
    """One torch (and FAISS) thread while searching for at most :data:`FEW_QUERIES` queries."""
    if n_queries > FEW_QUERIES:
        yield
        return
    torch_threads = torch.get_num_threads()
    faiss_threads = faiss.omp_get_max_threads() if faiss is not None else None
    torch.set_num_threads(1)
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        if faiss is not None:
            faiss.omp_set_num_threads(faiss_threads)


@torch.no_grad()
def exact_topk(vectors: np.ndarray | torch.Tensor, queries: torch.Tensor, k: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most similar rows of ``vectors`` to each query, by inner product, exactly.

    Args:
        vectors: the index, L2-normalised rows: a tensor (used in place), or a numpy array (memory-mapped or
            not; copied a chunk at a time).
        queries: L2-normalised query vectors.
        k: neighbours per query, 1 <= k <= N.

    Returns:
        ``(similarities, indices)``, each row in decreasing similarity.

    Shape:
        vectors (N, D), queries (Q, D) -> similarities (Q, k) float32, indices (Q, k) int64.
    """
    n = vectors.shape[0]
    q = queries.float()
    best_s = torch.empty(q.shape[0], 0)
    best_i = torch.empty(q.shape[0], 0, dtype=torch.long)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, q.shape[0]))
    with _threads_for(q.shape[0]):
        for lo in range(0, n, chunk):
            part = vectors[lo:lo + chunk]
            block = part.float() if isinstance(part, torch.Tensor) else torch.from_numpy(np.array(part, np.float32))
            sims = q @ block.T  # (Q, c)
            s, i = sims.topk(min(k, sims.shape[1]), dim=1)  # (Q, <=k)
            best_s = torch.cat([best_s, s], dim=1)
            best_i = torch.cat([best_i, i + lo], dim=1)
            if best_s.shape[1] > k:
                best_s, pick = best_s.topk(k, dim=1)  # (Q, k)
                best_i = best_i.gather(1, pick)
    order = best_s.argsort(dim=1, descending=True)
    return best_s.gather(1, order), best_i.gather(1, order)


def default_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: about 4 sqrt(n), at most 4096, with at least 39 training points per list
    (FAISS's minimum)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39, 4096))


class FaissSearcher:
    """A FAISS inner-product index over L2-normalised vectors.

    Args:
        kind: ``flat``, ``ivf`` or ``hnsw``.
        dim: D.
        nlist: inverted lists for ``ivf`` (default :func:`default_nlist` of the first add).
        nprobe: lists visited per ``ivf`` query (default 16, at most ``nlist``).
        hnsw_m: graph degree for ``hnsw``; ef_search: candidate list of an ``hnsw`` query.
    """

    def __init__(self, kind: str, dim: int, nlist: int | None = None, nprobe: int = 16, hnsw_m: int = 32,
                 ef_search: int = 64) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.faiss = require_faiss(f"an index of kind {kind!r}")
        self.kind, self.dim, self.nlist, self.nprobe = kind, dim, nlist, nprobe
        self.hnsw_m, self.ef_search = hnsw_m, ef_search
        self.index: Any = None

    def build(self, vectors: np.ndarray, seed: int = 0, ids: np.ndarray | None = None) -> "FaissSearcher":
        """Build the index over ``vectors`` (N, D); IVF trains its lists on a seeded sample.

        Args:
            ids: the id of each vector (default: its position); an HNSW index with ids is wrapped in an
                ``IndexIDMap``.
        """
        faiss = self.faiss
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.kind == "flat":
            self.index = faiss.IndexFlatIP(self.dim)
        elif self.kind == "hnsw":
            graph = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index = faiss.IndexIDMap(graph) if ids is not None else graph
            self._graph = graph  # kept alive beside the map that holds it
        else:
            self.nlist = self.nlist or default_nlist(len(x))
            if self.nlist > len(x):
                raise ValueError(f"nlist={self.nlist} inverted lists need at least as many vectors, got {len(x)}")
            self._quantizer = faiss.IndexFlatIP(self.dim)  # kept alive beside the index that uses it
            self.index = faiss.IndexIVFFlat(self._quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)  # k-means on at most 64 points per list: enough, and bounded time
            cap = _TRAIN_POINTS_PER_LIST * self.nlist
            sample = x if len(x) <= cap else x[np.sort(rng.choice(len(x), cap, replace=False))]
            self.index.train(sample)
        self.set_param(self.nprobe if self.kind == "ivf" else self.ef_search)
        self.add(x, ids)
        return self

    def add(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Add vectors (N, D), with ids when the index was built with them."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if ids is None:
            self.index.add(x)
        else:
            self.index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))

    @property
    def param_name(self) -> str | None:
        """The search parameter that trades recall for speed: ``nprobe``, ``efSearch`` or None (flat)."""
        return {"ivf": "nprobe", "hnsw": "efSearch"}.get(self.kind)

    def _inner(self) -> Any:
        """The index itself, inside an ``IndexIDMap`` if there is one."""
        inner = getattr(self.index, "index", None)
        return self.faiss.downcast_index(inner) if inner is not None else self.index

    def set_param(self, value: int) -> None:
        """Set ``nprobe`` (at most nlist) or ``efSearch``; nothing for flat."""
        if self.kind == "ivf":
            self.nprobe = int(min(value, self.nlist or value))
            self.index.nprobe = self.nprobe
        elif self.kind == "hnsw":
            self.ef_search = int(value)
            self._inner().hnsw.efSearch = self.ef_search

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` by inner product. Shape: queries (Q, D) -> (Q, k), (Q, k)."""
        q = np.ascontiguousarray(queries.float().cpu().numpy())
        with _threads_for(q.shape[0], self.faiss):
            sims, idx = self.index.search(q, k)
        return torch.from_numpy(sims.copy()), torch.from_numpy(idx.astype(np.int64))

    def save(self, path: str) -> None:
        self.faiss.write_index(self.index, path)

    @classmethod
    def load(cls, path: str, kind: str, dim: int, nprobe: int = 16, ef_search: int = 64,
             mmap: bool = True) -> "FaissSearcher":
        """Open a saved index, memory-mapped unless ``mmap`` is False."""
        searcher = cls(kind, dim, nprobe=nprobe, ef_search=ef_search)
        faiss = searcher.faiss
        searcher.index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC if mmap else 0)
        if kind == "ivf":
            searcher.nlist = searcher.index.nlist
        searcher.set_param(nprobe if kind == "ivf" else ef_search)
        return searcher


def recall_at_k(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean fraction of each query's exact top-k found in its approximate top-k.

    Shape:
        approx (Q, k), exact (Q, k) indices -> a float in [0, 1].
    """
    hits = [len(set(a.tolist()) & set(e.tolist())) / exact.shape[1] for a, e in zip(approx, exact)]
    return float(sum(hits) / len(hits)) if hits else float("nan")
