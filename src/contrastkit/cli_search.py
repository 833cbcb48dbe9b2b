"""The ``index`` and ``search`` subcommands: parsers and handlers over :mod:`contrastkit.search`.

    contrastkit index --checkpoint runs/x/last.pt --images photos/ --out photos.index [--update] [--kind ivf]
    contrastkit search --index photos.index --query me.jpg [--k 10] [--json] [--out results/]
    contrastkit search --index photos.index --near-duplicates [auto|THRESHOLD] [--target-precision 0.95] [--json]

Nothing here imports torch until a handler runs, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["_add_index_parser", "_add_search_parser", "_run_index", "_run_search"]


def _add_index_parser(sub) -> None:
    p = sub.add_parser("index", help="build a search index of a folder of images (L2-normalised h and paths)")
    p.add_argument("--checkpoint", default=None, help="a last.pt written by pretrain (or its run folder); "
                                                      "optional with --update (default: the index's)")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="the index folder to write")
    p.add_argument("--update", action="store_true", help="add the images of --images that are not in the index "
                                                         "yet, without embedding the others again")
    p.add_argument("--kind", default="flat", choices=("flat", "ivf", "hnsw"),
                   help="flat: exact search (default); ivf, hnsw: approximate FAISS indexes for large collections "
                        "(need faiss-cpu; recall@10 against exact search is measured and stored)")
    p.add_argument("--nlist", type=int, default=None, help="IVF inverted lists (default: about 4 sqrt(N))")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per query (default: the fewest "
                                                           "that reach --recall)")
    p.add_argument("--recall", type=float, default=0.95,
                   help="ivf, hnsw: the recall@10 against exact search, on held-out queries, that the search "
                        "parameter (nprobe, efSearch) is chosen for (default: 0.95); measured and stored")
    p.add_argument("--projection", action="store_true", help="index z = g(h) instead of h")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--num-workers", type=int, default=2, help="image decoding workers (default: 2)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="find the nearest indexed images to query images, or near-duplicates")
    p.add_argument("--index", required=True, help="an index folder written by contrastkit index")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--query", help="an image file, or a folder of query images")
    what.add_argument("--near-duplicates", nargs="?", const="auto", metavar="auto|THRESHOLD",
                      help="list groups of exact and near-duplicate images; with no value (or 'auto') the "
                           "threshold is calibrated on the index's own images and stored in it; a number sets the "
                           "score threshold (the scale 'auto' prints)")
    p.add_argument("--target-precision", type=float, default=0.95,
                   help="the precision --near-duplicates auto calibrates its threshold for (default: 0.95)")
    p.add_argument("--recalibrate", action="store_true",
                   help="calibrate the near-duplicate threshold again, even if the index holds one")
    p.add_argument("--calibration-sample", type=int, default=1000,
                   help="images sampled to calibrate the near-duplicate threshold, each given 6 edited copies "
                        "(default: 1000; fewer is faster and less certain)")
    p.add_argument("--k", type=int, default=10, help="neighbours per query (default: 10)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON line")
    p.add_argument("--out", default=None, help="folder for neighbours.png and gallery.html (with --query), or for "
                                               "duplicates.html (with --near-duplicates)")
    p.add_argument("--checkpoint", default=None, help="the model that embeds the queries (default: the index's; "
                                                      "another model is refused)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "faiss"),
                   help="exact search of a flat index: auto (FAISS when installed), torch or faiss")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists visited per query (default: the index's)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")


def _check_positive(flag: str, value) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be >= 1, got {value}")


def _run_index(args: argparse.Namespace) -> None:
    from .search import build_index

    for flag, value in (("--batch-size", args.batch_size), ("--nlist", args.nlist), ("--nprobe", args.nprobe)):
        _check_positive(flag, value)
    if args.num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {args.num_workers}")
    summary = build_index(args.checkpoint, args.images, args.out, kind=args.kind, update=args.update,
                          projection=args.projection, device=args.device, batch_size=args.batch_size,
                          num_workers=args.num_workers, progress=args.progress, nlist=args.nlist,
                          nprobe=args.nprobe, recall=args.recall)
    summary["bad_files"] = summary["bad_files"][:20]  # the whole list is in the index's index.json
    if "recall_at_10" in summary:
        param = "nprobe" if "nprobe" in summary else "efSearch"
        met = "reaching" if summary["recall_reached"] else "short of"
        print(f"recall@10 {summary['recall_at_10']:.3f} against exact search on held-out queries with {param} "
              f"{summary[param]}, {met} the target {summary['recall_target']}", file=sys.stderr)
    print(json.dumps(summary))


def _print_results(results: list[dict]) -> None:
    for r in results:
        print(f"query {r['query']}")
        for nb in r["neighbours"]:
            print(f"  {nb['similarity']:.4f}  {nb['path']}")


def _threshold_arg(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--near-duplicates takes 'auto' or a score threshold (a number, as 'auto' prints it), "
                         f"got {value!r}") from None


def _run_near_duplicates(args: argparse.Namespace) -> None:
    from .search import near_duplicates, write_duplicates_html

    result = near_duplicates(args.index, _threshold_arg(args.near_duplicates),
                             target_precision=args.target_precision, checkpoint=args.checkpoint,
                             device=args.device, recalibrate=args.recalibrate, progress=True,
                             sample=args.calibration_sample)
    info = sys.stderr if args.json else sys.stdout
    if result.calibration is not None:
        reused = " (stored in the index)" if result.reused else " (now stored in the index)"
        print(result.calibration.summary() + reused, file=info)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        exact = sum(all(g.identical[1:]) for g in result.groups)
        print(f"{len(result.groups)} groups of near-duplicates (score >= {result.threshold:.4f}; {exact} of them "
              f"exact copies only)")
        for g in result.groups:
            print("  " + "  ".join(f"{p} ({'identical' if same else format(s, '.4f')})" if i else p
                                   for i, (p, s, same) in enumerate(zip(g.paths, g.scores, g.identical))))
    if args.out is not None:
        page = write_duplicates_html(result, Path(args.out) / "duplicates.html")
        print(f"wrote {page}", file=info)


def _run_search(args: argparse.Namespace) -> None:
    from .search import search, write_search_outputs

    if args.near_duplicates is not None:
        _run_near_duplicates(args)
        return
    _check_positive("--k", args.k)
    results = search(args.index, args.query, k=args.k, checkpoint=args.checkpoint, device=args.device,
                     backend=args.backend, nprobe=args.nprobe)
    if args.json:
        print(json.dumps({"results": results}))
    else:
        _print_results(results)
    if args.out is not None:
        written = write_search_outputs(results, args.out)
        print(f"wrote {written['png']} and {written['html']}", file=sys.stderr if args.json else sys.stdout)
