"""Embedding throughput, and index build time / query latency / recall@10 of the search backends (issue 19).

    # images/s of embedding a folder (builds a flat index of it, reused below)
    python benchmarks/search_bench.py embed --checkpoint /tmp/cifar_enc/last.pt \
        --images ~/.cache/contrastkit/cifar10/train --out /tmp/cifar_train.index
    # exact torch vs FAISS flat vs FAISS IVF (and HNSW) on that index's vectors, or on random unit vectors
    python benchmarks/search_bench.py backends --index /tmp/cifar_train.index
    python benchmarks/search_bench.py backends --random 1000000 128
    # the README's retrieval picture: CIFAR-10 test images and their neighbours among the training images
    python benchmarks/search_bench.py picture --index /tmp/cifar_train.index \
        --queries ~/.cache/contrastkit/cifar10/test --out docs/search_neighbours.png
    # what the near-duplicate vectors (h over 6 views) add to indexing time
    python benchmarks/search_bench.py views --checkpoint /tmp/cifar_enc/last.pt \
        --images ~/.cache/contrastkit/cifar10/test --count 5000
    # a million vectors (issue 28): exact FAISS flat, and IVF / HNSW tuned for recall@10 >= 0.95
    python benchmarks/search_bench.py million --embeddings /tmp/h_train.npy /tmp/h_test.npy --kinds flat ivf hnsw
    python benchmarks/search_bench.py million --random --kinds flat ivf

Latency per query is given two ways: a batch of queries at once (time / queries), and one query at a time
(the median of single-query calls). recall@10 is against exact search, over the same queries. The load average
of the machine is printed beside the figures.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from contrastkit.search import FaissSearcher, ImageIndex, build_index, exact_topk, faiss_available  # noqa: E402
from contrastkit.search import recall_at_k, search, write_neighbours_png  # noqa: E402

from million_vectors import add_million_parser, cmd_million  # noqa: E402


def _load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def cmd_embed(args) -> None:
    print(f"before: {_load()}; torch threads {torch.get_num_threads()}", flush=True)
    summary = build_index(args.checkpoint, args.images, args.out, device="cpu", num_workers=args.num_workers,
                          batch_size=args.batch_size, progress=True)
    rate = summary["count"] / summary["build_s"]
    print(f"embedded {summary['count']} images (bad: {summary['bad_count']}) in {summary['build_s']:.1f} s: "
          f"{rate:.0f} images/s (decode + resize + forward + index write; batch {args.batch_size}, "
          f"{args.num_workers} workers); after: {_load()}")


def cmd_views(args) -> None:
    """What the near-duplicate vectors cost when indexing: the same images embedded with and without them."""
    from contrastkit.data.sources import ImageFiles
    from contrastkit.search import embed_stream, list_images, load_frozen_encoder

    paths = list_images(args.images)[:args.count]
    encoder = load_frozen_encoder(args.checkpoint)
    print(f"{len(paths)} images of {args.images}; torch threads {torch.get_num_threads()}; {_load()}", flush=True)
    for dup_views in (False, True, False, True):
        work = Path(args.work) / f"views-{dup_views}"
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        embed_stream(encoder, ImageFiles([(p, -1) for p in paths]), paths, work, device="cpu",
                     num_workers=args.num_workers, progress=False, dup_views=dup_views)
        elapsed = time.perf_counter() - t0
        shutil.rmtree(work, ignore_errors=True)
        print(f"near-duplicate views {'on ' if dup_views else 'off'}: {elapsed:.1f} s, "
              f"{len(paths) / elapsed:.0f} images/s; {_load()}", flush=True)


def _time(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _single_query_ms(fn, queries: torch.Tensor, n: int = 30) -> float:
    times = []
    for q in queries[:n]:
        t0 = time.perf_counter()
        fn(q[None])
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _vectors(args) -> tuple[np.ndarray, torch.Tensor, str]:
    g = torch.Generator().manual_seed(0)
    if args.random:
        n, d = args.random
        x = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1).numpy()  # (N, D)
        q = torch.nn.functional.normalize(torch.randn(args.queries, d, generator=g), dim=1)  # fresh queries
        return x, q, f"{n} random unit vectors, D={d}; {args.queries} fresh random queries"
    idx = ImageIndex.load(args.index, backend="torch")
    x = np.array(idx.vectors)
    pick = torch.randperm(len(x), generator=g)[:args.queries]
    return x, torch.from_numpy(x[pick.numpy()]), (f"{len(x)} vectors of {args.index} (D={x.shape[1]}); "
                                                  f"{args.queries} queries drawn from the index")


def cmd_backends(args) -> None:
    x, q, what = _vectors(args)
    k = 10
    print(f"{what}; k={k}; torch threads {torch.get_num_threads()}; {_load()}", flush=True)
    rows = []
    xt = torch.from_numpy(x)  # in memory, as ImageIndex holds it for the torch backend
    t_exact = _time(lambda: exact_topk(xt, q, k))
    exact = exact_topk(xt, q, k)[1]
    rows.append(("exact (torch, chunked matmul)", 0.0, 1000 * t_exact / len(q),
                 _single_query_ms(lambda v: exact_topk(xt, v, k), q), 1.0))
    if not faiss_available():
        print("faiss is not installed: pip install 'contrastkit[faiss]'")
    else:
        configs = [("FAISS flat", dict(kind="flat"), None)]
        nlist = args.nlist
        for nprobe in args.nprobe:
            configs.append((f"FAISS IVF nlist={nlist or 'auto'} nprobe={nprobe}", dict(kind="ivf", nlist=nlist,
                                                                                     nprobe=nprobe), nprobe))
        if args.hnsw:
            configs.append(("FAISS HNSW M=32 efSearch=64", dict(kind="hnsw"), None))
        built: dict = {}
        for name, cfg, nprobe in configs:
            key = (cfg["kind"], cfg.get("nlist"))
            if key not in built:
                t0 = time.perf_counter()
                built[key] = (FaissSearcher(cfg["kind"], x.shape[1], nlist=cfg.get("nlist")).build(x),
                              time.perf_counter() - t0)
            searcher, t_build = built[key]
            if nprobe is not None:
                searcher.index.nprobe = min(nprobe, searcher.nlist)
                name = name.replace("nlist=auto", f"nlist={searcher.nlist}")
            t = _time(lambda: searcher.search(q, k))
            rec = recall_at_k(searcher.search(q, k)[1], exact)
            rows.append((name, t_build, 1000 * t / len(q), _single_query_ms(lambda v: searcher.search(v, k), q),
                         rec))
    print("| backend | build s | ms/query, batch of %d | ms/query, one at a time | recall@10 |" % len(q))
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, tb, tq, t1, rec in rows:
        print(f"| {name} | {tb:.2f} | {tq:.3f} | {t1:.2f} | {rec:.3f} |")
    print(f"after: {_load()}")


def cmd_picture(args) -> None:
    folder = Path(os.path.expanduser(args.queries))
    files = sorted(p for p in folder.rglob("*.jpg"))
    g = torch.Generator().manual_seed(args.seed)
    pick = [files[i] for i in torch.randperm(len(files), generator=g)[:args.rows].tolist()]
    tmp = Path(args.out).with_suffix(".queries")
    tmp.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(pick):  # a folder of the chosen queries, named after their class
        (tmp / f"{i}_{p.parent.name}.jpg").write_bytes(p.read_bytes())
    results = search(args.index, tmp, k=args.k, device="cpu")
    write_neighbours_png(results, args.out, side=48)
    for r in results:
        classes = [Path(n["path"]).parent.name for n in r["neighbours"]]
        print(Path(r["query"]).name, "->", " ".join(classes))
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--images", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--num-workers", type=int, default=2)
    b = sub.add_parser("backends")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--index")
    src.add_argument("--random", type=int, nargs=2, metavar=("N", "D"))
    b.add_argument("--queries", type=int, default=500)
    b.add_argument("--nlist", type=int, default=None, help="IVF lists (default: the index's default_nlist)")
    b.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    b.add_argument("--hnsw", action="store_true", help="also HNSW (slow to build on 2 cores)")
    p = sub.add_parser("picture")
    p.add_argument("--index", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rows", type=int, default=6)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("views", help="indexing time with and without the near-duplicate vectors")
    v.add_argument("--checkpoint", required=True)
    v.add_argument("--images", required=True)
    v.add_argument("--count", type=int, default=5000)
    v.add_argument("--num-workers", type=int, default=2)
    v.add_argument("--work", default="/tmp/views_cost")
    add_million_parser(sub)
    args = parser.parse_args()
    {"embed": cmd_embed, "backends": cmd_backends, "picture": cmd_picture, "million": cmd_million,
     "views": cmd_views}[args.cmd](args)


if __name__ == "__main__":
    main()
