"""Search at a million vectors (issue 28): exact FAISS flat against IVF and HNSW tuned for a recall target.

    python benchmarks/search_bench.py million --embeddings /tmp/h_train.npy /tmp/h_test.npy --kinds flat ivf hnsw
    python benchmarks/search_bench.py million --random --kinds flat ivf

**Vectors.** From real embeddings: the given h (the 60,000 CIFAR-10 train + test images through a trained
encoder; the cifar-budget ResNet-18 of width 0.25 has h of 128 dimensions, so no projection is needed), L2-
normalised. 1,500 of them (seeded) are held out: 500 to tune the approximate indexes on, 1,000 to measure
them with. Each of the other 58,500 is repeated (17 or 18 times) with Gaussian jitter and re-normalised,
to 1,000,000 vectors. The jitter moves a vector by half the median distance between an image's h and its
nearest other image's (printed), so the copies of one image are about as close to it as its real
neighbours are, not a tight clump. The queries are jittered the same way. ``--random``: uniform random unit
vectors instead (no neighbourhood structure: the worst case for an approximate index; reported, not deciding).

**Measured.** Build time (IVF: k-means on 64 points per list at most, then adding; then the tuning),
memory (the FAISS structure's size, and the growth of the process's resident memory while it was built),
the latency of a top-10 query one at a time (p50 and p99 over the 1,000 measuring queries, after 50 warm-up
queries; one thread, as contrastkit searches a few queries), the time per query in one batch of 1,000
(all threads), and recall@10 against exact search on the 1,000 measuring queries. The approximate indexes'
search parameter is chosen by :func:`contrastkit.search.tuning.build_tuned` for ``--recall`` on the 500 tuning
queries, as ``contrastkit index --kind ivf|hnsw --recall`` does on held-out rows.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from contrastkit.search import FaissSearcher, recall_at_k
from contrastkit.search.tuning import build_tuned

__all__ = ["add_million_parser", "cmd_million"]


def _load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2 ** 20


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _jitter_scale(base: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """Per-dimension sigma moving a vector by half the median nearest-neighbour distance; and that distance."""
    probe = base[rng.choice(len(base), 2000, replace=False)]
    sims = torch.from_numpy(probe) @ torch.from_numpy(base).T  # (2000, N)
    nearest = sims.topk(2, dim=1).values[:, 1].numpy()  # the first is the vector itself
    distance = float(np.median(np.sqrt(np.maximum(0.0, 2.0 - 2.0 * nearest))))
    return 0.5 * distance / np.sqrt(base.shape[1]), distance


def make_vectors(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(1M index vectors, 500 tuning queries, 1,000 measuring queries, a description)."""
    rng = np.random.default_rng(args.seed)
    n, d = args.n, args.dim
    if args.random:
        x = np.empty((n, d), np.float32)
        for lo in range(0, n, 100_000):
            x[lo:lo + 100_000] = _unit(rng.standard_normal((min(100_000, n - lo), d)))
        tune, measure = _unit(rng.standard_normal((500, d))), _unit(rng.standard_normal((1000, d)))
        return x, tune, measure, f"{n:,} uniform random unit vectors, D={d}; fresh random queries"
    base = _unit(np.concatenate([np.load(p) for p in args.embeddings]).astype(np.float32))
    order = rng.permutation(len(base))
    tune_base, measure_base, kept = base[order[:500]], base[order[500:1500]], base[order[1500:]]
    sigma, distance = _jitter_scale(kept, rng)
    reps = np.resize(np.arange(len(kept)), n)  # each kept vector n / len(kept) times
    rng.shuffle(reps)
    x = np.empty((n, kept.shape[1]), np.float32)
    for lo in range(0, n, 100_000):
        rows = reps[lo:lo + 100_000]
        x[lo:lo + len(rows)] = _unit(kept[rows] + sigma * rng.standard_normal((len(rows), kept.shape[1])))
    tune = _unit(tune_base + sigma * rng.standard_normal(tune_base.shape))
    measure = _unit(measure_base + sigma * rng.standard_normal(measure_base.shape))
    moved = float(np.median(np.sum(x[:5000] * kept[reps[:5000]], axis=1)))
    what = (f"{n:,} vectors from {len(base):,} real h (D={kept.shape[1]}; {len(kept):,} kept, each repeated "
            f"{n // len(kept)}-{-(-n // len(kept))} times with Gaussian jitter sigma {sigma:.4f} per dimension: "
            f"half the median nearest-neighbour distance {distance:.3f}; median cosine of a copy to its source "
            f"{moved:.4f}); queries: 500 tuning + 1,000 measuring from held-out h, jittered alike")
    return x, tune, measure, what


def _latency(searcher: FaissSearcher, queries: np.ndarray, k: int = 10) -> tuple[float, float, float]:
    """p50 and p99 ms of single top-k queries (after 50 warm-up queries), and ms per query in one batch."""
    q = torch.from_numpy(queries)
    for row in q[:50]:
        searcher.search(row[None], k)
    times = []
    for row in q:
        t0 = time.perf_counter()
        searcher.search(row[None], k)
        times.append(1000 * (time.perf_counter() - t0))
    t0 = time.perf_counter()
    searcher.search(q, k)
    batch = 1000 * (time.perf_counter() - t0) / len(q)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))], batch


def _structure_mb(searcher: FaissSearcher, tmp: Path) -> float:
    searcher.save(str(tmp))
    size = tmp.stat().st_size / 2 ** 20
    return size


def _open_mmap_mb(path: Path, kind: str, dim: int) -> dict:
    """Open a saved index in a fresh process: resident memory growth and the first query's time."""
    code = (
        "import json,sys,time\nfrom pathlib import Path\nimport numpy as np, torch\nimport faiss\n"
        "from contrastkit.search import FaissSearcher\n"
        "rss=lambda: int(Path('/proc/self/statm').read_text().split()[1])*4096/2**20\n"
        "b=rss();t0=time.perf_counter()\n"
        f"s=FaissSearcher.load(sys.argv[1],'{kind}',{dim})\n"
        "opened=time.perf_counter()-t0;grew=rss()-b\n"
        f"q=torch.nn.functional.normalize(torch.randn(1,{dim}),dim=1)\n"
        "t0=time.perf_counter();s.search(q,10);first=time.perf_counter()-t0\n"
        "print(json.dumps({'open_s':opened,'rss_growth_mb':grew,'first_query_ms':1000*first}))\n")
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def _row(name: str, params: str, build_s: float, structure_mb: float, rss_mb: float, lat, rec: float) -> str:
    p50, p99, batch = lat
    return (f"| {name} | {params} | {build_s:.1f} | {structure_mb:.0f} | {rss_mb:.0f} | {p50:.2f} | {p99:.2f} | "
            f"{batch:.3f} | {rec:.3f} |")


def cmd_million(args) -> None:
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    x, tune, measure, what = make_vectors(args)
    print(f"{what}; made in {time.perf_counter() - t0:.0f} s; {_load()}", flush=True)
    before, t0 = _rss_mb(), time.perf_counter()
    flat = FaissSearcher("flat", x.shape[1]).build(x)
    flat_build, flat_grew = time.perf_counter() - t0, _rss_mb() - before
    exact = flat.search(torch.from_numpy(measure), 10)[1]
    tmp = Path(args.work)
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in args.kinds:
        before, t0 = _rss_mb(), time.perf_counter()
        if kind == "flat":  # the exact index built above
            searcher, params, tuned_note, build_s, grew = flat, "-", "", flat_build, flat_grew
        else:
            searcher, tuned = build_tuned(x, kind, args.recall, queries=tune, seed=args.seed, hnsw_m=args.hnsw_m)
            params = (f"nlist {searcher.nlist}, " if kind == "ivf" else f"M {args.hnsw_m}, ") + \
                f"{tuned.param} {tuned.value}"
            tuned_note = f"tuning recall {tuned.recall:.3f} (tried {tuned.tried})"
            build_s, grew = time.perf_counter() - t0, _rss_mb() - before
        lat = _latency(searcher, measure)
        rec = recall_at_k(searcher.search(torch.from_numpy(measure), 10)[1], exact)
        size = _structure_mb(searcher, tmp / f"{kind}.index")
        opened = _open_mmap_mb(tmp / f"{kind}.index", kind, x.shape[1]) if kind != "flat" else {}
        rows.append(_row(kind, params, build_s, size, grew, lat, rec))
        print(f"[{kind}] {rows[-1]} {tuned_note} {('opened memory-mapped: ' + json.dumps(opened)) if opened else ''}"
              f"; {_load()}", flush=True)
        if searcher is not flat:
            del searcher
    print(f"\n{what}\n\n| index | parameters (chosen for recall@10 >= {args.recall}) | build s | structure MB | "
          f"RSS growth MB | p50 ms | p99 ms | ms/query, batch of 1,000 | recall@10 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print(f"\nafter: {_load()}; FAISS threads {__import__('faiss').omp_get_max_threads()}")


def add_million_parser(sub) -> None:
    m = sub.add_parser("million", help="1,000,000 vectors: exact FAISS flat against IVF / HNSW tuned for recall")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--embeddings", nargs="+", help=".npy files of h (e.g. contrastkit embed of CIFAR-10 train "
                                                     "and test)")
    src.add_argument("--random", action="store_true", help="uniform random unit vectors")
    m.add_argument("--n", type=int, default=1_000_000)
    m.add_argument("--dim", type=int, default=128, help="with --random")
    m.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"], choices=("flat", "ivf", "hnsw"))
    m.add_argument("--recall", type=float, default=0.95)
    m.add_argument("--hnsw-m", type=int, default=32)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--work", default="/tmp/million_vectors", help="where the structures are written")
