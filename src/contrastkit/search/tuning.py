"""An approximate index whose search parameter is chosen for a recall target, on held-out queries.

IVF visits ``nprobe`` of its inverted lists per query, HNSW keeps ``efSearch`` candidates: the larger,
the closer to exact search and the slower. :func:`build_tuned` builds the structure on all rows but a
seeded held-out sample, searches the held-out rows exactly and approximately over the rest, takes the
smallest parameter of a doubling ladder (then halves the last step, while it still holds) whose
recall@10 reaches the target by one standard error (the mean over the queries less its standard error,
so that other queries reach it too), and adds the held-out rows at the end (each row keeps its position
as its id). The recall stored is the one measured for the parameter chosen, on those held-out queries.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .backends import FaissSearcher, exact_topk, recall_at_k

__all__ = ["TunedSearch", "build_tuned", "tune_param", "held_out_rows", "HELD_OUT"]

#: Held-out queries at most (and at most a fifth of the rows).
HELD_OUT = 500
_MAX_EF = 4096


@dataclass
class TunedSearch:
    """What tuning chose and measured.

    Attributes:
        param: ``nprobe`` or ``efSearch``.
        value: its chosen value.
        recall: recall@k of the held-out queries at that value.
        target: the recall asked for; reached: whether ``recall >= target``.
        queries: held-out queries; k: neighbours compared.
        tried: ``{value: recall}`` of every value measured.
    """

    param: str
    value: int
    recall: float
    target: float
    reached: bool
    queries: int
    k: int
    tried: dict[int, float]

    def to_dict(self) -> dict:
        return {"value": round(self.recall, 4), "target": self.target, "reached": self.reached,
                "queries": self.queries, "k": self.k, "param": self.param, "param_value": self.value,
                "against": "exact search, held-out queries (rows left out of the structure until tuned)",
                "tried": {str(v): round(r, 4) for v, r in self.tried.items()}}


def check_recall(value) -> float:
    """``value`` as a recall target. Raises ValueError unless it is a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"the recall target must be a number in (0, 1] (e.g. 0.95), got {value!r}")
    return float(value)


def held_out_rows(n: int, seed: int = 0, count: int = HELD_OUT) -> np.ndarray:
    """A seeded sample of rows to hold out: at most ``count`` and at most a fifth of ``n`` (at least 1 when n > 1)."""
    q = min(count, max(1, n // 5)) if n > 1 else 0
    return np.sort(np.random.default_rng(seed).choice(n, q, replace=False)) if q else np.zeros(0, np.int64)


def _ladder(searcher: FaissSearcher, k: int) -> list[int]:
    if searcher.kind == "ivf":
        top = int(searcher.nlist)
        values, v = [], 1
        while v < top:
            values.append(v)
            v *= 2
        return values + [top]
    values, v = [], max(16, k)
    while v < _MAX_EF:
        values.append(v)
        v *= 2
    return values + [_MAX_EF]


def tune_param(searcher: FaissSearcher, queries: torch.Tensor, exact: torch.Tensor, target: float,
               k: int, fixed: int | None = None) -> TunedSearch:
    """The smallest search parameter whose recall@k over ``queries`` reaches ``target`` (or the largest tried);
    with ``fixed``, that value, measured.

    Shape:
        queries (Q, D), exact (Q, k) ids of the exact top-k.
    """
    tried: dict[int, float] = {}
    holds: dict[int, bool] = {}

    def measure(value: int) -> bool:
        """Whether ``value`` reaches the target by one standard error (its mean recall goes to ``tried``)."""
        if value not in tried:
            searcher.set_param(value)
            found = searcher.search(queries, k)[1]
            per_query = np.array([recall_at_k(a[None], e[None]) for a, e in zip(found, exact)])  # (Q,)
            tried[value] = float(per_query.mean())
            spread = per_query.std(ddof=1) / np.sqrt(len(per_query)) if len(per_query) > 1 else 0.0
            holds[value] = tried[value] - spread >= target
        return holds[value]

    ladder = [fixed] if fixed is not None else _ladder(searcher, k)
    chosen = next((v for v in ladder if measure(v)), ladder[-1])
    lower = max((v for v in ladder if v < chosen), default=None)
    while lower is not None and chosen - lower > 1:  # halve the last step while the target still holds
        mid = (lower + chosen) // 2
        if measure(mid):
            chosen = mid
        else:
            lower = mid
    searcher.set_param(chosen)
    measure(chosen)
    recall = tried[chosen]
    return TunedSearch(searcher.param_name or "", chosen, recall, target, recall >= target, int(queries.shape[0]),
                       k, dict(sorted(tried.items())))


def build_tuned(vectors: np.ndarray, kind: str, target: float, *, nlist: int | None = None, seed: int = 0,
                hnsw_m: int = 32, fixed: int | None = None, queries: np.ndarray | None = None
                ) -> tuple[FaissSearcher, TunedSearch]:
    """An IVF or HNSW index over ``vectors`` with its search parameter tuned for recall@10 >= ``target``
    (``fixed``: that nprobe or efSearch, its recall measured).

    Args:
        queries: held-out query vectors (Q, D) to tune on; by default a seeded sample of the rows is held out
            of the structure while it is tuned, then added.

    Raises:
        ValueError: a bad target or kind, or fewer than 2 rows.

    Shape:
        vectors (N, D) unit rows; ids are row positions.
    """
    check_recall(target)
    if kind not in ("ivf", "hnsw"):
        raise ValueError(f"only ivf and hnsw indexes are tuned, got kind {kind!r}")
    n = vectors.shape[0]
    if n < 2:
        raise ValueError(f"an approximate index needs at least 2 vectors, got {n}")
    held = held_out_rows(n, seed) if queries is None else np.zeros(0, np.int64)
    keep = np.setdiff1d(np.arange(n), held)
    kept = np.asarray(vectors[keep], np.float32) if len(held) else np.asarray(vectors, np.float32)  # (N - Q, D)
    searcher = FaissSearcher(kind, vectors.shape[1], nlist=nlist, hnsw_m=hnsw_m).build(kept, seed,
                                                                                  ids=keep if len(held) else None)
    q = torch.from_numpy(np.asarray(vectors[held] if queries is None else queries, np.float32))  # (Q, D)
    k = min(10, len(keep))
    exact = torch.from_numpy(keep)[exact_topk(kept, q, k)[1]]  # (Q, k) ids
    if fixed is not None and searcher.kind == "ivf":
        fixed = int(min(fixed, searcher.nlist))
    tuned = tune_param(searcher, q, exact, target, k, fixed)
    if len(held):
        searcher.add(np.asarray(vectors[held], np.float32), held)
    return searcher, tuned
