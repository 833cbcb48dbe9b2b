"""The ``index`` and ``search`` subcommands: parsers and handlers over :mod:`contrastkit.search`.

    contrastkit index --checkpoint runs/x/last.pt --images photos/ --out photos.index [--kind ivf]
    contrastkit index --out photos.index --update | --rebuild
    contrastkit search --index photos.index --query me.jpg [--k 10] [--json] [--out results/]
    contrastkit search --index photos.index --near-duplicates [auto|THRESHOLD] [--target-precision 0.95] [--json]

Nothing here imports torch until a handler runs, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..runtime.text import printable

__all__ = ["register"]


def _add_index_parser(sub) -> None:
    p = sub.add_parser("index", help="build a search index of a folder of images (L2-normalised h and paths)")
    p.add_argument("--checkpoint", default=None, help="a last.pt written by pretrain (or its run folder), or any "
                                                      "export load_encoder reads (.safetensors, .torchscript, .onnx, "
                                                      ".pt2, a hub folder, a state_dict with its .json); optional "
                                                      "with --update and --rebuild (default: the index's)")
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
    p.add_argument("--overwrite", action="store_true", help="--out: replace the pictures an earlier search wrote")
    p.add_argument("--relative-paths", action="store_true",
                   help="--out: the pages name images by their paths relative to the indexed folder and the "
                        "query folder, never by absolute paths (for a page to share)")
    p.add_argument("--checkpoint", default=None, help="the model that embeds the queries, a checkpoint or an export "
                                                      "(default: the index's; another model is refused)")
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
                          progress=args.progress, nlist=args.nlist, nprobe=args.nprobe, recall=args.recall)
    summary["bad_files"] = summary["bad_files"][:20]  # the whole list is in the index's index.json
    if "recall_at_10" in summary:
        param = "nprobe" if "nprobe" in summary else "efSearch"
        met = "reaching" if summary["recall_reached"] else "short of"
        print(f"recall@10 {summary['recall_at_10']:.3f} against exact search on held-out queries with {param} "
              f"{summary[param]}, {met} the target {summary['recall_target']}", file=sys.stderr)
    print(json.dumps(summary))


def _print_results(results: list[dict]) -> None:
    for r in results:
        print(f"query {printable(r['query'])}")
        for nb in r["neighbours"]:
            print(f"  {nb['similarity']:.4f}  {printable(nb['path'])}")


def _print_notes(results, file) -> None:
    """What the results leave out: the queries found in the index (not their own neighbours), unreadable queries."""
    itself = [r for r in results if r["left_out"]]
    if itself:
        shown = "; ".join(f"{printable(r['query'])} is {', '.join(printable(p) for p in r['left_out'])}"
                          if r["left_out"] != [r["query"]] else printable(r["query"]) for r in itself[:3])
        more = f" and {len(itself) - 3} more" if len(itself) > 3 else ""
        print(f"note: {len(itself)} {'query is' if len(itself) == 1 else 'queries are'} in the index (the same file "
              f"or the same pixels), so not {'its' if len(itself) == 1 else 'their'} own neighbour: {shown}{more}",
              file=file)
    if results.skipped:
        shown = "; ".join(f"{printable(b['path'])} ({b['reason']})" for b in results.skipped[:3])
        more = f" and {len(results.skipped) - 3} more" if len(results.skipped) > 3 else ""
        print(f"note: skipped {len(results.skipped)} query {'file' if len(results.skipped) == 1 else 'files'} that "
              f"cannot be read: {shown}{more}", file=file)


def _threshold_arg(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--near-duplicates takes 'auto' or a score threshold (a number, as 'auto' prints it), "
                         f"got {value!r}") from None


def _run_near_duplicates(args: argparse.Namespace) -> None:
    import contextlib

    from ..search import duplicates_output, near_duplicates, write_duplicates_html

    if args.relative_paths:
        raise ValueError("--relative-paths applies to the pictures of --query; the near-duplicates page names each "
                         "image by its file name")
    if args.out is None and args.overwrite:
        raise ValueError("--overwrite applies to the page of --out; give --out DIR")
    threshold = _threshold_arg(args.near_duplicates)
    with duplicates_output(args.out, args.overwrite) if args.out is not None else contextlib.nullcontext() as files:
        result = near_duplicates(args.index, threshold, target_precision=args.target_precision,
                                 checkpoint=args.checkpoint, device=args.device, recalibrate=args.recalibrate,
                                 progress=True, sample=args.calibration_sample)
        info = sys.stderr if args.json else sys.stdout
        if result.calibration is not None:
            kept = (" (stored in the index)" if result.reused else " (not stored: " + result.not_stored + ")"
                    if result.not_stored else " (now stored in the index)")
            print(result.calibration.summary() + kept, file=info)
        elif result.not_stored:
            print(f"near-duplicate vectors computed for this search, not stored: {result.not_stored}", file=info)
        if args.json:
            print(json.dumps(result.to_json()))
        else:
            _print_groups(result)
        if files is not None:
            page = write_duplicates_html(result, args.out, files=files)
            print(f"wrote {page}", file=info)


def _print_groups(result) -> None:
    exact = sum(all(g.identical[1:]) for g in result.groups)
    print(f"{len(result.groups)} groups of near-duplicates (score >= {result.threshold:.4f}; {exact} of them exact "
          f"copies only)")
    print("each group: its first image, then each other with its score and cosine similarity with the first")
    for g in result.groups:
        print("  " + printable(g.paths[0]))
        for p, sc, sim, same in zip(g.paths[1:], g.scores[1:], g.similarities[1:], g.identical[1:]):
            what = "identical pixels, " if same else ""
            print(f"    {printable(p)}  ({what}score {sc:.4f}, similarity {sim:.4f})")


def _run_search(args: argparse.Namespace) -> None:
    import contextlib

    from ..search import ImageIndex, relative_paths, search, search_output, write_search_outputs

    if args.near_duplicates is not None:
        _run_near_duplicates(args)
        return
    _check_positive("--k", args.k)
    if args.out is None and (args.overwrite or args.relative_paths):
        raise ValueError("--overwrite and --relative-paths apply to the pictures of --out; give --out DIR")
    index = ImageIndex.load(args.index, backend=args.backend, nprobe=args.nprobe)
    with search_output(args.out, args.overwrite) if args.out is not None else contextlib.nullcontext() as files:
        results = search(index, args.query, k=args.k, checkpoint=args.checkpoint, device=args.device)
        if args.json:
            print(json.dumps({"results": results, "skipped": results.skipped}))
        else:
            _print_results(results)
        _print_notes(results, sys.stderr)
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
