"""Retrieval metrics for deep metric learning: Recall@K, MAP@R, R-precision, NMI.

Definitions (Musgrave, Belongie, Lim 2020, "A Metric Learning Reality Check").
Similarity is the cosine similarity of L2-normalised embeddings.
For a query q with label y_q, its references are the gallery items other than
q itself; R_q is the number of references with label y_q.

* **Recall@K** (as used for CUB/Cars/SOP since Song et al. 2016): the fraction
  of queries with at least one same-label item among their K nearest
  references.
* **R-precision**: the share of same-label items among the R_q nearest
  references, averaged over queries.
* **MAP@R**: mean average precision truncated at R_q,
  ``MAP@R = 1/R_q * sum_{i=1..R_q} P(i) * rel(i)``, where rel(i) is 1 when the
  i-th nearest reference has label y_q and P(i) is the precision over the first
  i. It rewards putting *all* same-label items first, not only one.
* **NMI**: normalised mutual information (arithmetic normalisation, sklearn's
  default) between the labels and a k-means clustering of the L2-normalised
  query embeddings, with as many clusters as distinct query labels
  (sklearn ``KMeans``, k-means++ initialisation, ``n_init=1``,
  ``random_state=seed``).

Protocol details:

* With only a gallery (``query_embeddings=None``) every sample is a query
  against all others (leave-one-out), as for CUB-200 / Cars-196 / SOP.
  With separate queries, every gallery item is a reference.
* Queries whose label has no reference (R_q = 0) cannot be scored; they are
  left out of every metric and a ``UserWarning`` says how many.
* The search is exact: cosine similarities are computed for ``chunk_size``
  queries at a time and reduced with ``topk`` to the max(K, R_q) nearest, so
  memory is chunk_size x N_gallery, never N x N (60k x 60k fits). The
  ``topk`` width is the largest class size (MAP@R needs the R_q nearest), which
  dominates the cost: 60k gallery embeddings of 10 classes take about 1.5 min
  and 1.3 GB on two busy CPU cores, seconds on a GPU (``device="cuda"``). With
  ``backend="faiss"`` (optional dependency) an exact inner-product index
  (``IndexFlatIP``) does the search instead; the results are the same up to ties.

Multi-label data: with labels given as (N, C) multi-hot label sets, a reference is relevant to a query when the two
share a label, R_q is the number of references that share one with q, and Recall@K, R-precision and MAP@R are as
above with "same-label" read as "sharing a label". NMI compares a clustering with one class per sample, which
label sets do not give: it is left out.

All values are fractions in [0, 1].
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import as_features, as_labels, check_positive_int, resolve_device

__all__ = ["retrieval_metrics", "BACKENDS"]

BACKENDS = ("torch", "faiss")


def _check_ks(ks: Sequence[int]) -> list[int]:
    if isinstance(ks, (int, str)) or not isinstance(ks, Sequence) or len(ks) == 0:
        raise TypeError(f"ks must be a non-empty sequence of ints, e.g. (1, 2, 4, 8), got {ks!r}")
    return [check_positive_int("each k in ks", k) for k in ks]


def _torch_search(
    queries: torch.Tensor, query_ids: torch.Tensor | None, gallery: torch.Tensor, k: int
) -> torch.Tensor:
    """Indices of the k most similar gallery rows, excluding ``query_ids`` (leave-one-out).

    Shape:
        queries (Q, D), query_ids (Q,) or None, gallery (N, D) -> (Q, k).
    """
    sim = queries @ gallery.T  # (Q, N)
    if query_ids is not None:
        sim[torch.arange(queries.shape[0], device=sim.device), query_ids] = float("-inf")
    return sim.topk(k, dim=1).indices  # (Q, k)


def _faiss_search(index, queries: torch.Tensor, query_ids: torch.Tensor | None, k: int) -> torch.Tensor:
    """Same contract as :func:`_torch_search` with a faiss ``IndexFlatIP``.

    Shape:
        queries (Q, D), query_ids (Q,) or None -> (Q, k).
    """
    extra = 1 if query_ids is not None else 0
    _, found = index.search(queries.cpu().numpy().astype(np.float32), k + extra)
    found_t = torch.from_numpy(found).long()  # (Q, k + extra)
    if query_ids is None:
        return found_t
    is_self = found_t == query_ids.cpu()[:, None]  # (Q, k + 1)
    # Drop the query itself; where it was not returned (ties), drop the last column.
    is_self[~is_self.any(dim=1), -1] = True
    return found_t[~is_self].view(found_t.shape[0], k)  # (Q, k)


def _faiss_index(gallery: torch.Tensor):
    """An exact inner-product faiss index over the (normalised) gallery."""
    try:
        import faiss
    except ImportError as exc:
        raise ValueError("backend='faiss' needs faiss installed (faiss-cpu or faiss-gpu)") from exc
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery.cpu().numpy().astype(np.float32))
    return index


def _as_label_sets(name: str, y, n: int, n_name: str) -> torch.Tensor:
    """Multi-hot label sets (N, C) of 0/1 values as a bool tensor.

    Raises:
        ValueError: not (n, C) with C >= 1, or values other than 0 and 1.
    """
    t = torch.as_tensor(y)
    if t.dim() != 2 or t.shape[0] != n or t.shape[1] < 1:
        raise ValueError(f"{name} as label sets must have shape (N, C) = ({n}, C) to match {n_name}, got "
                         f"{tuple(t.shape)}")
    if not bool(((t == 0) | (t == 1)).all()):
        raise ValueError(f"{name} of shape {tuple(t.shape)} are multi-hot label sets and must hold only 0 and 1")
    return t.bool()


def _labels(name: str, y, n: int, n_name: str) -> torch.Tensor:
    """Class labels (N,) as a long tensor, or multi-hot label sets (N, C) as a bool tensor."""
    if torch.as_tensor(y).dim() == 2:
        return _as_label_sets(name, y, n, n_name)
    return as_labels(name, y, n, n_name=n_name)


def _relevant(y: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
    """Whether each found reference is relevant to its query: the same class, or a shared label.

    Shape:
        y (Q,) or (Q, C), found (Q, k) or (Q, k, C) -> (Q, k) bool.
    """
    if y.dim() == 1:
        return found == y[:, None]
    return (found & y[:, None, :]).any(dim=-1)


def _relevant_counts(q_labels: torch.Tensor, gallery_labels: torch.Tensor, leave_one_out: bool,
                     chunk_size: int) -> torch.Tensor:
    """R_q: the references relevant to each query (the query itself is not its own reference).

    Shape:
        q_labels (Q,) or (Q, C), gallery_labels (N,) or (N, C) -> (Q,).
    """
    if q_labels.dim() == 1:
        num_classes = int(max(gallery_labels.max(), q_labels.max())) + 1
        class_counts = torch.bincount(gallery_labels, minlength=num_classes)  # (C,)
        return class_counts[q_labels] - (1 if leave_one_out else 0)
    g = gallery_labels.float().t()  # (C, N)
    counts = [((q_labels[i:i + chunk_size].float() @ g) > 0).sum(dim=1)  # (Q_c,)
              for i in range(0, q_labels.shape[0], chunk_size)]
    r = torch.cat(counts)  # (Q,)
    return r - (q_labels.any(dim=1).long() if leave_one_out else 0)  # a non-empty set shares with itself


def _scores(queries: torch.Tensor, q_labels: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor,
            r: torch.Tensor, scored: torch.Tensor, ks: list[int], chunk_size: int, leave_one_out: bool,
            index) -> tuple[torch.Tensor, float, float]:
    """Summed over the scored queries, ``chunk_size`` at a time: Recall@K hits per K, R-precision and AP@R."""
    recall_hits = torch.zeros(len(ks), dtype=torch.float64)
    r_precision_sum = 0.0
    map_sum = 0.0
    for start in range(0, queries.shape[0], chunk_size):
        stop = min(start + chunk_size, queries.shape[0])
        keep = scored[start:stop]  # (Q_c,)
        if not bool(keep.any()):
            continue
        ids = torch.arange(start, stop, device=gallery.device)[keep]  # (Q_c',)
        q = queries[ids]  # (Q_c', D)
        y = q_labels[ids]  # (Q_c',)
        r_c = r[ids]  # (Q_c',)
        k_needed = max(max(ks), int(r_c.max()))
        if index is None:
            nn_idx = _torch_search(q, ids if leave_one_out else None, gallery, k_needed)  # (Q_c', k)
        else:
            nn_idx = _faiss_search(index, q, ids if leave_one_out else None, k_needed).to(gallery.device)
        match = _relevant(y, gallery_labels[nn_idx])  # (Q_c', k)
        for j, k in enumerate(ks):
            recall_hits[j] += float(match[:, :k].any(dim=1).sum())
        rank = torch.arange(1, k_needed + 1, device=gallery.device)  # (k,)
        within_r = rank[None, :] <= r_c[:, None]  # (Q_c', k)
        rel = (match & within_r).double()  # (Q_c', k)
        r_precision_sum += float((rel.sum(dim=1) / r_c).sum())
        precision_at_i = rel.cumsum(dim=1) / rank[None, :]  # (Q_c', k)
        map_sum += float(((precision_at_i * rel).sum(dim=1) / r_c).sum())
    return recall_hits, r_precision_sum, map_sum


def _scored_queries(r: torch.Tensor, label_sets: bool) -> tuple[torch.Tensor, int]:
    """The queries with a relevant reference (R_q > 0) and their number; a warning says how many are left out.

    Raises:
        ValueError: no query has one.

    Shape:
        r (Q,) -> (Q,) bool.
    """
    scored = r > 0  # (Q,)
    n_scored = int(scored.sum())
    if n_scored == 0:
        raise ValueError("no query has a same-label item (or, for label sets, one sharing a label) among its "
                         "references: retrieval metrics are undefined")
    if n_scored < r.shape[0]:
        warnings.warn(
            f"{r.shape[0] - n_scored} of {r.shape[0]} queries have no "
            f"{'reference sharing a label' if label_sets else 'same-label reference'} (R = 0) and are left "
            "out of the retrieval metrics",
            stacklevel=3,
        )
    return scored, n_scored


@torch.no_grad()
def retrieval_metrics(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    query_embeddings: torch.Tensor | None = None,
    query_labels: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 2, 4, 8),
    chunk_size: int = 1024,
    nmi: bool = True,
    seed: int = 0,
    backend: str = "torch",
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Recall@K, MAP@R, R-precision and NMI of an embedding.

    Args:
        embeddings: gallery (reference) embeddings.
        labels: gallery labels: class indices (N,), or multi-hot label sets (N, C) (relevant: a shared label).
        query_embeddings: separate queries, or None for leave-one-out over the
            gallery.
        query_labels: labels of the queries (given iff ``query_embeddings`` is).
        ks: the K of Recall@K (each >= 1 and at most the number of references).
        chunk_size: queries per similarity block (>= 1).
        nmi: also compute NMI of k-means on the query embeddings.
        seed: k-means seed.
        backend: ``"torch"`` (exact, chunked) or ``"faiss"`` (exact
            ``IndexFlatIP``; needs faiss installed).
        device: where the torch search runs (e.g. ``"cuda"``); default: the
            device of ``embeddings``.

    Returns:
        ``{"recall@K" for each K in ks, "map@r", "r_precision", "nmi"}`` (no
        ``"nmi"`` when ``nmi=False`` or for label sets), each a float in [0, 1].

    Raises:
        TypeError: for wrongly typed inputs or only one of the query arguments.
        ValueError: for mismatched shapes or dimensions, non-finite
            embeddings, a K larger than the number of references, no query with
            a same-label reference, or an unknown / unavailable backend.

    Shape:
        embeddings (N, D), labels (N,) or (N, C), query_embeddings (Q, D), query_labels (Q,) or (Q, C).
    """
    gallery = as_features("embeddings", embeddings)
    gallery_labels = _labels("labels", labels, gallery.shape[0], "embeddings")
    leave_one_out = query_embeddings is None
    queries, q_labels = _checked_queries(query_embeddings, query_labels, gallery, gallery_labels)
    ks = _check_ks(ks)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    n_refs = gallery.shape[0] - (1 if leave_one_out else 0)
    if max(ks) > n_refs:
        raise ValueError(
            f"ks={tuple(ks)} asks for {max(ks)} neighbours but each query has only {n_refs} references"
        )

    if device is not None:
        gallery = gallery.to(resolve_device(device))
    gallery = F.normalize(gallery, dim=1)  # (N, D)
    queries = gallery if leave_one_out else F.normalize(queries.to(gallery.device), dim=1)  # (Q, D)
    gallery_labels = gallery_labels.to(gallery.device)
    q_labels = q_labels.to(gallery.device)
    r = _relevant_counts(q_labels, gallery_labels, leave_one_out, chunk_size)  # (Q,) R_q
    scored, n_scored = _scored_queries(r, q_labels.dim() == 2)  # (Q,)

    index = _faiss_index(gallery) if backend == "faiss" else None

    recall_hits, r_precision_sum, map_sum = _scores(queries, q_labels, gallery, gallery_labels, r, scored, ks,
                                                    chunk_size, leave_one_out, index)

    results = {f"recall@{k}": float(recall_hits[j]) / n_scored for j, k in enumerate(ks)}
    results["map@r"] = map_sum / n_scored
    results["r_precision"] = r_precision_sum / n_scored
    if nmi and q_labels.dim() == 1:  # label sets give no clustering to compare with
        results["nmi"] = _kmeans_nmi(queries, q_labels, seed)
    return results


def _checked_queries(query_embeddings: torch.Tensor | None, query_labels: torch.Tensor | None,
                     gallery: torch.Tensor, gallery_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The queries and their labels: the gallery itself for leave-one-out (both None), else the given ones,
    checked against the gallery (labels of the same kind, embeddings of the same dimension)."""
    if (query_embeddings is None) != (query_labels is None):
        raise TypeError("query_embeddings and query_labels must be given together (or both left as None)")
    if query_embeddings is None:
        return gallery, gallery_labels
    queries = as_features("query_embeddings", query_embeddings)
    q_labels = _labels("query_labels", query_labels, queries.shape[0], "query_embeddings")
    if q_labels.dim() != gallery_labels.dim() or q_labels.shape[1:] != gallery_labels.shape[1:]:
        raise ValueError(f"query_labels have shape {tuple(q_labels.shape)} but labels {tuple(gallery_labels.shape)}; "
                         f"expected labels of one kind (both (N,) classes or both (N, C) label sets)")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query_embeddings has D={queries.shape[1]} but embeddings has D={gallery.shape[1]}; "
            "expected the same dimension"
        )
    return queries, q_labels


def _kmeans_nmi(embeddings: torch.Tensor, labels: torch.Tensor, seed: int) -> float:
    """NMI between labels and k-means clusters (k = number of distinct labels).

    Shape:
        embeddings (N, D) L2-normalised, labels (N,).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    y = labels.cpu().numpy()
    n_clusters = int(np.unique(y).size)
    x = embeddings.cpu().numpy().astype(np.float32)
    clusters = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(y, clusters))
