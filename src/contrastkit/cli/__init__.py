"""The command line: a thin shell over the Python API. Each subcommand lives in a module of this package that
registers its parser and handler; :func:`main` parses and runs the handler.

    contrastkit pretrain --method simclr --data digits --epochs 10 --out runs/x       (cli/pretrain.py)
    contrastkit distill --teacher runs/x/finetuned.pt --data DATA --out runs/d
    contrastkit eval --checkpoint runs/x/last.pt --protocol knn|linear|finetune|retrieval|all   (cli/evaluate.py)
    contrastkit embed --checkpoint runs/x/last.pt --out runs/x/embeddings
    contrastkit preview-augment --data digits --out grid.png
    contrastkit index --checkpoint runs/x/last.pt --images photos/ --out photos.index  (cli/search.py)
    contrastkit search --index photos.index --query me.jpg --out results/
    contrastkit export --checkpoint runs/x --format safetensors --out encoder.safetensors
    contrastkit demo --out runs/demo                                                 (cli/experiment.py)
    contrastkit experiment NAME --budget smoke|cpu|gpu --out DIR

Nothing here imports torch until a handler runs: ``--help``, ``--version`` and argument errors stay fast.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from .. import __version__
from . import evaluate, experiment, export, pretrain, search
from .common import run_handler
from .pretrain import config_from_args

__all__ = ["main", "build_parser", "config_from_args"]

#: the modules whose subcommands the command line has, in the order ``--help`` lists them
SUBCOMMANDS = (pretrain, evaluate, search, experiment, export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contrastkit", description="Contrastive representation learning: "
                                     "SimCLR (Chen et al. 2020) and SupCon (Khosla et al. 2020).")
    parser.add_argument("--version", action="version", version=f"contrastkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``contrastkit ARGV``; returns the exit code (0, 2 for a user error, 130 after Ctrl-C)."""
    args = build_parser().parse_args(argv)
    return run_handler(args, argv)
