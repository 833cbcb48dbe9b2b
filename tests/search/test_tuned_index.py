"""Approximate indexes tuned for a recall target on held-out queries; memory-mapped loading (issue 28)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contrastkit.cli import main
from contrastkit.search import ImageIndex, exact_topk, recall_at_k
from contrastkit.search.index import INDEX_FORMAT
from contrastkit.search.tuning import build_tuned, held_out_rows

pytest.importorskip("faiss")


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 50 random centres (real embeddings have neighbourhoods; uniform ones do not)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, d))
    x = centres[rng.integers(0, 50, n)] + 0.35 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_tuned_parameter_is_the_smallest_reaching_the_target(kind):
    data = _clustered(4300, 16)
    x, fresh = data[:4000], torch.from_numpy(data[4000:])  # 300 fresh queries from the same clusters
    searcher, tuned = build_tuned(x, kind, 0.9, nlist=64 if kind == "ivf" else None)
    assert tuned.reached and tuned.recall >= 0.9 and tuned.param == {"ivf": "nprobe", "hnsw": "efSearch"}[kind]
    assert tuned.queries == len(held_out_rows(4000)) == 500 and tuned.k == 10
    # smaller values tried fall short (by one standard error, about 0.01 here, at most)
    below = [r for v, r in tuned.tried.items() if v < tuned.value]
    assert all(r < 0.915 for r in below) and (kind == "hnsw" or below)
    # the stored recall holds for fresh queries from the same distribution (within sampling error)
    fresh_recall = recall_at_k(searcher.search(fresh, 10)[1], exact_topk(x, fresh, 10)[1])
    assert fresh_recall >= 0.85
    # every row is in the index, under its own position as id
    assert searcher.index.ntotal == 4000
    assert searcher.search(torch.from_numpy(x[[7, 3999]]), 1)[1].flatten().tolist() == [7, 3999]


def test_bad_recall_target():
    with pytest.raises(ValueError, match=r"recall target must be a number in \(0, 1\].*got 1.5"):
        build_tuned(_clustered(100, 8), "ivf", 1.5)


def test_index_cli_stores_and_prints_the_measured_recall(checkpoint, flat_folder, tmp_path, capsys):
    out = tmp_path / "ivf"
    assert main(["index", "--checkpoint", str(checkpoint), "--images", str(flat_folder), "--out", str(out),
                 "--kind", "hnsw", "--recall", "0.9", "--device", "cpu", "--num-workers", "0",
                 "--no-progress"]) == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out)
    stored = json.loads((out / "index.json").read_text())["recall_at_10"]
    assert summary["recall_at_10"] == stored["value"] and stored["target"] == 0.9
    assert stored["param"] == "efSearch" and summary["efSearch"] == stored["param_value"]
    assert stored["queries"] == len(held_out_rows(10)) and "held-out" in stored["against"]
    assert f"recall@10 {stored['value']:.3f}" in printed.err and "efSearch" in printed.err
    rc = main(["index", "--checkpoint", str(checkpoint), "--images", str(flat_folder), "--out",
               str(tmp_path / "x"), "--kind", "ivf", "--recall", "0", "--device", "cpu"])
    assert rc == 2 and "recall target must be a number in (0, 1]" in capsys.readouterr().err


_MEASURE_LOAD = """
import json, sys
from pathlib import Path
import numpy as np
import faiss  # the library itself is not what is measured
from contrastkit.search import ImageIndex

def rss_mb():
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2 ** 20

before = rss_mb()
idx = ImageIndex.load(sys.argv[1], backend="faiss")
searcher = idx._faiss()
grew = rss_mb() - before
print(json.dumps({"grew": grew, "memmap": isinstance(idx.vectors, np.memmap), "file": str(idx.vectors.filename),
                  "nprobe": searcher.index.nprobe}))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read the resident memory")
def test_a_large_index_opens_memory_mapped(tmp_path):
    """An index of 200,000 x 64 vectors (49 MB, and as much again in its IVF structure) opens without reading
    them: the vectors are a np.memmap and the IVF structure is mapped, not loaded (measured in a fresh process,
    whose resident memory grows by what it reads)."""
    n, d = 200_000, 64
    root = tmp_path / "big.index"
    root.mkdir()
    x = _clustered(n, d)
    np.save(root / "vectors.npy", x)
    searcher, tuned = build_tuned(x, "ivf", 0.9, nlist=256)
    searcher.save(str(root / "faiss.index"))
    (root / "paths.json").write_text(json.dumps([f"/img/{i}.png" for i in range(n)]))
    (root / "index.json").write_text(json.dumps({
        "format": INDEX_FORMAT, "version": 1, "count": n, "dim": d, "what": "h", "kind": "ivf", "checkpoint": "x",
        "fingerprint": "0" * 64, "nlist": 256, "nprobe": tuned.value, "recall_at_10": tuned.to_dict()}))
    file_mb = ((root / "vectors.npy").stat().st_size + (root / "faiss.index").stat().st_size) / 2 ** 20
    run = subprocess.run([sys.executable, "-c", _MEASURE_LOAD, str(root)], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    measured = json.loads(run.stdout)
    assert measured["memmap"] and Path(measured["file"]) == root / "vectors.npy"
    assert measured["grew"] < 0.25 * file_mb, (measured, file_mb)  # paths and centroids, not 98 MB of vectors
    assert measured["nprobe"] == tuned.value
    idx = ImageIndex.load(root, backend="faiss")
    q = torch.from_numpy(x[[5, 150_000]])
    assert idx.search_vectors(q, 1)[1].flatten().tolist() == [5, 150_000]
