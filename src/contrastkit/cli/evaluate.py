"""The ``eval``, ``embed`` and ``preview-augment`` subcommands.

    contrastkit eval --checkpoint runs/x/last.pt --protocol knn|linear|finetune|retrieval|all|classifier
    contrastkit embed --checkpoint runs/x/last.pt --out runs/x/embeddings
    contrastkit preview-augment --data digits --out grid.png
"""
from __future__ import annotations

import argparse
from typing import Sequence

from ..evaluate.options import ALL_PROTOCOLS, check_eval_options
from .common import print_json

__all__ = ["register"]


def _run_eval(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    # the options are checked before torch is imported: a wrong flag costs no start-up
    if args.epochs is not None:
        raise ValueError("eval has no --epochs: use --linear-epochs N (linear probe) or --finetune-epochs N "
                         "(finetune)")
    check_eval_options(args.protocol, label_fraction=args.label_fraction, from_scratch=args.from_scratch,
                       linear_epochs=args.linear_epochs, finetune_epochs=args.finetune_epochs,
                       projection=args.projection, from_head_layer=args.from_head_layer or None, save=args.save,
                       labels=args.labels)
    from ..evaluate.protocols import evaluate_checkpoint

    print_json(evaluate_checkpoint(args.checkpoint, args.protocol, data=args.data, data_root=args.data_root,
                                   label_fraction=args.label_fraction, from_scratch=args.from_scratch,
                                   projection=args.projection, device=args.device, seed=args.seed,
                                   num_workers=args.num_workers, linear_epochs=args.linear_epochs,
                                   finetune_epochs=args.finetune_epochs, malloc=args.malloc,
                                   from_head_layer=args.from_head_layer, save=args.save,
                                   results_dir=args.results_dir, overwrite=args.overwrite, labels=args.labels))


def _run_embed(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    from ..search import embed_to_files

    print_json(embed_to_files(args.checkpoint, args.out, data=args.data, data_root=args.data_root, split=args.split,
                              projection=args.projection, device=args.device, num_workers=args.num_workers,
                              progress=args.progress, overwrite=args.overwrite))


def _run_preview(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    from ..data.preview import preview_augment

    path = preview_augment(args.data, args.out, data_root=args.data_root, preset=args.preset, n_images=args.images,
                           n_views=args.views, seed=args.seed, skip_bad_files=args.skip_bad_files,
                           overwrite=args.overwrite)
    print(f"wrote {path}")


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="evaluate a checkpoint: knn, linear, finetune, retrieval or all")
    e.add_argument("--checkpoint", required=True, help="a last.pt written by pretrain, its run folder, or an export "
                                                       "written by contrastkit export (knn, linear, retrieval)")
    e.add_argument("--protocol", default="knn", choices=ALL_PROTOCOLS,
                   help="evaluation protocol; classifier scores a fine-tuned checkpoint's own classifier "
                        "(default: knn)")
    e.add_argument("--data", default=None, help="data set to evaluate on (default: the checkpoint's; another one "
                                                "is transfer)")
    e.add_argument("--data-root", default="~/.cache/contrastkit/datasets", help="torchvision data root")
    e.add_argument("--label-fraction", type=float, default=None,
                   help="finetune: fraction of training labels (SimCLR: 0.01 and 0.1) (default: 0.1)")
    e.add_argument("--from-scratch", action="store_true",
                   help="finetune: a randomly initialised encoder instead (the supervised baseline on the subset)")
    e.add_argument("--linear-epochs", type=int, default=None, help="linear: epochs of the probe (default: 100)")
    e.add_argument("--finetune-epochs", type=int, default=None, help="finetune: epochs (default: 30)")
    e.add_argument("--epochs", type=int, default=None, help=argparse.SUPPRESS)  # refused, naming the two above
    e.add_argument("--projection", action="store_true", help="knn, linear, retrieval: evaluate z = g(h) instead of h")
    e.add_argument("--labels", default=None, help="retrieval on a folder of multi-labelled images: a CSV of their "
                   "label sets (columns path and labels, as pretrain --labels); relevant = shares a label")
    e.add_argument("--from-head-layer", type=int, default=0,
                   help="finetune from the output of the head's first L Linear-BN-ReLU blocks (0: h; SimCLRv2 "
                        "Sec. 2.2: 1 of a 3-layer head) (default: 0)")
    e.add_argument("--save", default=None, help="finetune: write the fine-tuned network (encoder, head layers, "
                                                "classifier) to this checkpoint (*.pt), for eval, embed and distill")
    e.add_argument("--overwrite", action="store_true", help="--save: replace a checkpoint an earlier --save wrote "
                                                            "(a run's checkpoint never is)")
    e.add_argument("--results-dir", default=None, help="write eval_*.json here instead of beside the checkpoint "
                                                       "(the result is printed either way)")
    e.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    e.add_argument("--seed", type=int, default=0, help="seed of subsets and classifiers (default: 0)")
    e.add_argument("--num-workers", type=int, default=2, help="data loading workers (default: 2)")
    e.add_argument("--malloc", choices=("auto", "off"), default="auto",
                   help="auto: on CPU, keep freed memory between batches (as pretrain --malloc; default); off")
    e.set_defaults(handler=_run_eval)


def _add_embed(sub) -> None:
    m = sub.add_parser("embed", help="export h (or z) for every image, with its path and label")
    m.add_argument("--checkpoint", required=True, help="a last.pt written by pretrain, or its run folder, or any "
                                                       "export load_encoder reads (with --data)")
    m.add_argument("--data", default=None, help="data set (default: the checkpoint's; needed with an export)")
    m.add_argument("--data-root", default="~/.cache/contrastkit/datasets", help="torchvision data root")
    m.add_argument("--split", default=None, choices=("all", "train", "test"),
                   help="which images (default: all, every image of the train and test splits)")
    m.add_argument("--out", required=True, help="output prefix: writes OUT.npy, OUT.csv and OUT.json")
    m.add_argument("--overwrite", action="store_true", help="replace the files an earlier embed wrote at --out, once "
                                                            "the new ones are complete")
    m.add_argument("--projection", action="store_true", help="export z = g(h) instead of h")
    m.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    m.add_argument("--num-workers", type=int, default=2, help="data loading workers (default: 2)")
    m.add_argument("--skip-bad-files", action="store_true", help="accepted for symmetry with pretrain: embed always "
                   "leaves unreadable image files out, counted and listed in the result")
    m.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    m.set_defaults(handler=_run_embed)


def _add_preview(sub) -> None:
    a = sub.add_parser("preview-augment", help="save an image grid of augmented views")
    a.add_argument("--data", default="digits", help="data set or folder (default: digits)")
    a.add_argument("--data-root", default="~/.cache/contrastkit/datasets", help="torchvision data root")
    a.add_argument("--out", default="augment_preview.png", help="image file to write; .png, .jpg, .jpeg or .webp "
                                                                "picks the format (default: augment_preview.png)")
    a.add_argument("--skip-bad-files", action="store_true", help="pass over unreadable image files")
    a.add_argument("--preset", default="auto", help="augmentation preset (default: auto)")
    a.add_argument("--images", type=int, default=6, help="number of images (rows) (default: 6)")
    a.add_argument("--views", type=int, default=4, help="views per image (default: 4)")
    a.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    a.add_argument("--overwrite", action="store_true", help="replace a grid an earlier preview-augment wrote at "
                   "--out (a file contrastkit did not write is never replaced)")
    a.set_defaults(handler=_run_preview)


def register(sub) -> None:
    """Add ``eval``, ``embed`` and ``preview-augment`` to the command line's subcommands."""
    _add_eval(sub)
    _add_embed(sub)
    _add_preview(sub)
