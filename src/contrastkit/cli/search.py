"""The ``index`` and ``search`` subcommands: parsers and handlers over :mod:`contrastkit.search`.

    contrastkit index --checkpoint runs/x/last.pt --images photos/ --out photos.index [--kind ivf]
    contrastkit index --out photos.index --update | --rebuild
    contrastkit search --index photos.index --query me.jpg [--k 10] [--json] [--out results/]
    contrastkit search --index photos.index --near-duplicates 0.95 [--json]

Nothing here imports torch until a handler runs, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..runtime.text import printable

__all__ = ["register"]


def _add_index_parser(sub) -> None:
    p = sub.add_parser("index", help="build a search index of a folder of images (L2-normalised h and paths)")
    p.add_argument("--checkpoint", default=None, help="a last.pt written by pretrain (or its run folder); "
                                                      "optional with --update and --rebuild (default: the index's)")
    p.add_argument("--images", default=None, help="folder of images (searched recursively); optional with --update "
                                                  "and --rebuild (default: the index's)")
    p.add_argument("--out", required=True, help="the index folder to write")
    p.add_argument("--update", action="store_true", help="embed the images that are new or changed (size or "
                                                         "modification time) and drop those that are gone")
    p.add_argument("--rebuild", action="store_true", help="embed every image again with the checkpoint as it is "
                                                          "now (after the run was trained further); the old index "
                                                          "stays until the new one is complete")
    p.add_argument("--overwrite", action="store_true", help="build a new index in place of the one at --out (the "
                                                            "old one stays until the new one is complete)")
    p.add_argument("--kind", default="flat", choices=("flat", "ivf", "hnsw"),
                   help="flat: exact search (default); ivf, hnsw: approximate FAISS indexes for large collections "
                        "(need faiss-cpu; recall@10 against exact search is measured and stored)")
    p.add_argument("--nlist", type=int, default=None, help="IVF inverted lists (default: about 4 sqrt(N))")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists visited per query (default: 16)")
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
    what.add_argument("--near-duplicates", type=float, metavar="THRESHOLD",
                      help="list groups of images whose cosine similarity is >= THRESHOLD (e.g. 0.95)")
    p.add_argument("--k", type=int, default=10, help="neighbours per query (default: 10)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON line")
    p.add_argument("--out", default=None, help="folder for neighbours.png and gallery.html (with --query)")
    p.add_argument("--overwrite", action="store_true", help="--out: replace the pictures an earlier search wrote")
    p.add_argument("--relative-paths", action="store_true",
                   help="--out: the gallery names images by their paths relative to the indexed folder and the "
                        "query folder, never by absolute paths (for a page to share)")
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
    from ..search import build_index

    for flag, value in (("--batch-size", args.batch_size), ("--nlist", args.nlist), ("--nprobe", args.nprobe)):
        _check_positive(flag, value)
    if args.num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {args.num_workers}")
    summary = build_index(args.checkpoint, args.images, args.out, kind=args.kind, update=args.update,
                          rebuild=args.rebuild, overwrite=args.overwrite, projection=args.projection,
                          device=args.device, batch_size=args.batch_size, num_workers=args.num_workers,
                          progress=args.progress, nlist=args.nlist, nprobe=args.nprobe)
    summary["bad_files"] = summary["bad_files"][:20]  # the whole list is in the index's index.json
    print(json.dumps(summary))


def _print_results(results: list[dict]) -> None:
    for r in results:
        print(f"query {printable(r['query'])}")
        for nb in r["neighbours"]:
            print(f"  {nb['similarity']:.4f}  {printable(nb['path'])}")


def _run_search(args: argparse.Namespace) -> None:
    import contextlib

    from ..search import ImageIndex, find_near_duplicates, relative_paths, search, search_output, write_search_outputs

    if args.near_duplicates is not None:
        if args.out is not None:
            raise ValueError("--out applies to --query (pictures of neighbours), not to --near-duplicates")
        groups = find_near_duplicates(args.index, args.near_duplicates)
        if args.json:
            print(json.dumps({"groups": groups}))
        else:
            print(f"{len(groups)} groups of near-duplicates (cosine similarity >= {args.near_duplicates})")
            for g in groups:
                print("  " + "  ".join(printable(p) for p in g))
        return
    _check_positive("--k", args.k)
    if args.out is None and (args.overwrite or args.relative_paths):
        raise ValueError("--overwrite and --relative-paths apply to the pictures of --out; give --out DIR")
    index = ImageIndex.load(args.index, backend=args.backend, nprobe=args.nprobe)
    with search_output(args.out, args.overwrite) if args.out is not None else contextlib.nullcontext() as files:
        results = search(index, args.query, k=args.k, checkpoint=args.checkpoint, device=args.device)
        if args.json:
            print(json.dumps({"results": results}))
        else:
            _print_results(results)
        if files is not None:
            query = os.path.abspath(os.path.expanduser(args.query))
            shown = (relative_paths(results, index.info["images"], query if os.path.isdir(query) else
                                    os.path.dirname(query)) if args.relative_paths else results)
            written = write_search_outputs(shown, args.out, files=files)
            print(f"wrote {written['png']} and {written['html']}", file=sys.stderr if args.json else sys.stdout)


def register(sub) -> None:
    """Add ``index`` and ``search`` to the command line's subcommands."""
    _add_index_parser(sub)
    sub.choices["index"].set_defaults(handler=lambda args, argv: _run_index(args))
    _add_search_parser(sub)
    sub.choices["search"].set_defaults(handler=lambda args, argv: _run_search(args))
