import warnings

import pytest
import torch
import torch.nn.functional as F

from contrastkit.evaluate import retrieval_metrics


def _slow_reference(gallery, gallery_y, queries=None, query_y=None, ks=(1, 2, 4, 8)):
    """Loop implementation of Recall@K, R-precision and MAP@R (Musgrave et al. 2020), float64; with label sets
    (N, C), relevant means sharing a label."""
    loo = queries is None
    if loo:
        queries, query_y = gallery, gallery_y
    g = F.normalize(gallery.double(), dim=1)
    q = F.normalize(queries.double(), dim=1)
    recall = {k: 0.0 for k in ks}
    r_prec = map_r = 0.0
    n = 0
    for i in range(q.shape[0]):
        refs = [j for j in range(g.shape[0]) if not (loo and j == i)]
        refs.sort(key=lambda j: -float(q[i] @ g[j]))
        if gallery_y.dim() == 2:
            mine = {c for c in range(query_y.shape[1]) if query_y[i, c]}
            rel = [int(bool(mine & {c for c in range(gallery_y.shape[1]) if gallery_y[j, c]})) for j in refs]
        else:
            rel = [int(gallery_y[j] == query_y[i]) for j in refs]
        r = sum(rel)
        if r == 0:
            continue
        n += 1
        for k in ks:
            recall[k] += float(any(rel[:k]))
        r_prec += sum(rel[:r]) / r
        ap, hits = 0.0, 0
        for pos in range(r):
            if rel[pos]:
                hits += 1
                ap += hits / (pos + 1)
        map_r += ap / r
    out = {f"recall@{k}": recall[k] / n for k in ks}
    out["map@r"] = map_r / n
    out["r_precision"] = r_prec / n
    return out


def _random(n, dim=6, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_leave_one_out_matches_slow_reference():
    x, y = _random(90)
    fast = retrieval_metrics(x, y, nmi=False)
    slow = _slow_reference(x, y)
    assert fast.keys() == slow.keys()
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], abs=1e-9), key


def test_query_gallery_matches_slow_reference():
    gallery, gallery_y = _random(70, seed=1)
    queries, query_y = _random(33, seed=2)
    fast = retrieval_metrics(gallery, gallery_y, queries, query_y, ks=(1, 3, 10), nmi=False)
    slow = _slow_reference(gallery, gallery_y, queries, query_y, ks=(1, 3, 10))
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], abs=1e-9), key


def test_chunked_equals_unchunked():
    x, y = _random(150, classes=4, seed=3)
    a = retrieval_metrics(x, y, chunk_size=7, nmi=False)
    b = retrieval_metrics(x, y, chunk_size=100_000, nmi=False)
    assert a == pytest.approx(b, abs=1e-12)


def test_separable_gives_one(clusters):
    x, y = clusters(20, 4)
    res = retrieval_metrics(x, y)
    assert res["recall@1"] == 1.0 and res["recall@8"] == 1.0
    assert res["map@r"] == pytest.approx(1.0) and res["r_precision"] == pytest.approx(1.0)
    assert res["nmi"] == pytest.approx(1.0, abs=1e-6)


def test_shuffled_labels_give_chance():
    x, y = _random(1500, dim=8, classes=5, seed=4)
    res = retrieval_metrics(x, y, ks=(1,))
    assert abs(res["recall@1"] - 0.2) < 0.04
    assert res["r_precision"] < 0.3 and res["map@r"] < 0.2
    assert res["nmi"] < 0.05


def test_queries_without_reference_are_left_out_with_a_warning():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1])  # the single class-1 sample has no other class-1 item
    with pytest.warns(UserWarning, match="1 of 3 queries have no same-label reference"):
        res = retrieval_metrics(x, y, ks=(1,), nmi=False)
    assert res["recall@1"] == 1.0


def test_no_warning_when_all_queries_scored(clusters):
    x, y = clusters(3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retrieval_metrics(x, y, ks=(1, 2), nmi=False)


def test_faiss_backend_matches_torch():
    pytest.importorskip("faiss")
    x, y = _random(80, seed=5)
    a = retrieval_metrics(x, y, nmi=False)
    b = retrieval_metrics(x, y, nmi=False, backend="faiss")
    assert a == pytest.approx(b, abs=1e-9)


def test_validation_errors():
    x, y = _random(10)
    with pytest.raises(ValueError, match="asks for 10 neighbours but each query has only 9 references"):
        retrieval_metrics(x, y, ks=(1, 10))
    with pytest.raises(ValueError, match="each k in ks must be >= 1"):
        retrieval_metrics(x, y, ks=(0,))
    with pytest.raises(TypeError, match="ks must be a non-empty sequence"):
        retrieval_metrics(x, y, ks=4)
    with pytest.raises(TypeError, match="must be given together"):
        retrieval_metrics(x, y, query_embeddings=x)
    with pytest.raises(ValueError, match="query_embeddings has D=3 but embeddings has D=6"):
        retrieval_metrics(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match=r"labels has shape \(9,\) but embeddings has N=10"):
        retrieval_metrics(x, y[:9])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="embeddings has non-finite values"):
        retrieval_metrics(bad, y)
    with pytest.raises(ValueError, match="backend must be one of"):
        retrieval_metrics(x, y, backend="annoy")
    with pytest.raises(ValueError, match="no query has a same-label item"):
        retrieval_metrics(x[:3], torch.tensor([0, 1, 2]), ks=(1,))


def test_faiss_code_path_with_a_stand_in_index(monkeypatch):
    """Exercise the faiss branch (self-removal in leave-one-out) with an exact numpy stand-in."""
    import sys
    import types

    import numpy as np

    class FlatIP:
        def __init__(self, dim):
            self.data = np.zeros((0, dim), dtype=np.float32)

        def add(self, x):
            self.data = np.concatenate([self.data, x])

        def search(self, q, k):
            sims = q @ self.data.T
            order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(sims, order, axis=1), order

    monkeypatch.setitem(sys.modules, "faiss", types.SimpleNamespace(IndexFlatIP=FlatIP))
    x, y = _random(60, seed=6)
    q, qy = _random(20, seed=7)
    for args in ((), (q, qy)):
        a = retrieval_metrics(x, y, *args, nmi=False, chunk_size=9)
        b = retrieval_metrics(x, y, *args, nmi=False, chunk_size=9, backend="faiss")
        assert a == pytest.approx(b, abs=1e-9)


def test_device_argument():
    x, y = _random(40, seed=8)
    assert retrieval_metrics(x, y, nmi=False, device="cpu") == retrieval_metrics(x, y, nmi=False)


# issue 30: multi-label retrieval, a neighbour is relevant when it shares a label

def _label_sets(n, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, c, generator=g) < 0.3).long()


def test_label_sets_match_slow_reference():
    x, _ = _random(80)
    y = _label_sets(80)
    fast = retrieval_metrics(x, y, ks=(1, 4), chunk_size=7)
    slow = _slow_reference(x, y, ks=(1, 4))
    assert fast.keys() == slow.keys()  # no NMI for label sets
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], abs=1e-9), key
    gallery, queries = _random(50, seed=1)[0], _random(20, seed=2)[0]
    fast = retrieval_metrics(gallery, _label_sets(50, seed=3), queries, _label_sets(20, seed=4), ks=(1, 3))
    slow = _slow_reference(gallery, _label_sets(50, seed=3), queries, _label_sets(20, seed=4), ks=(1, 3))
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], abs=1e-9), key


def test_one_hot_label_sets_equal_class_labels():
    x, y = _random(60)
    sets = retrieval_metrics(x, F.one_hot(y, 5), nmi=False)
    assert sets == pytest.approx(retrieval_metrics(x, y, nmi=False), abs=1e-12)


def test_bad_label_sets():
    x, _ = _random(10)
    with pytest.raises(ValueError, match="only 0 and 1"):
        retrieval_metrics(x, torch.full((10, 3), 2))
    with pytest.raises(ValueError, match="labels of one kind"):
        retrieval_metrics(x, _label_sets(10), x, torch.zeros(10, dtype=torch.long))
