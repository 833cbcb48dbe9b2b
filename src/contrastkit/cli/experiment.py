"""The ``experiment`` and ``demo`` subcommands.

    contrastkit experiment NAME --budget smoke|cpu|gpu --out DIR
    contrastkit demo --out runs/demo
"""
from __future__ import annotations

import argparse
from typing import Sequence

__all__ = ["register"]


def _run_experiment(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    from ..experiments import run_experiment

    run_experiment(args.name, data=args.data, budget=args.budget, out=args.out, device=args.device, seed=args.seed)


def _run_demo(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    from ..experiments.demo import run_demo

    try:
        run_demo(args.out, epochs=args.epochs, seed=args.seed)
    except KeyboardInterrupt:
        args.interrupted = ("\ninterrupted: run the same command again to resume the demo from its last checkpoint "
                            f"(in {args.out}/simclr)")
        raise


def register(sub) -> None:
    """Add ``experiment`` and ``demo`` to the command line's subcommands."""
    d = sub.add_parser("demo", help="the offline demo: SimCLR on digits, then kNN and linear evaluation "
                                    "against a random encoder and raw pixels")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default: the demo's)")
    d.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    d.set_defaults(handler=_run_demo)

    x = sub.add_parser("experiment", help="reproduce one of the seed's claims (tables and plots)")
    x.add_argument("name", help="experiment name (run 'contrastkit experiment list')")
    x.add_argument("--data", default=None, help="data set or folder (default: the budget's: digits for smoke, "
                                                "cifar10 for cpu and gpu)")
    x.add_argument("--budget", default="smoke", choices=("smoke", "cpu", "gpu"), help="size of the runs "
                                                                                       "(default: smoke)")
    x.add_argument("--out", default=None, help="output folder (default: runs/experiments/NAME)")
    x.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    x.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    x.set_defaults(handler=_run_experiment)
