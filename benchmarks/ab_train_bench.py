"""Steady training throughput of two source trees of contrastkit, interleaved: the same train_bench.py pipeline
run alternately from tree A and tree B, several rounds, so that both see the same machine load.

    git worktree add --detach /tmp/before main
    .venv/bin/python benchmarks/ab_train_bench.py --a /tmp/before --b . --rounds 4 --steps 30

Each run is ``train_bench.py --one PIPELINE`` in its own process with ``PYTHONPATH=TREE/src`` (the order within a
round alternates). Prints each run's steady images/s, then one JSON line: the B/A ratio of every round, their
median, min and max.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "train_bench.py"


def run_tree(tree: Path, args: argparse.Namespace) -> float:
    """Steady images/s of one run of the pipeline from ``tree``'s sources."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve() / "src")}
    cmd = [sys.executable, str(BENCH), "--one", args.pipeline, "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--width",
           str(args.width)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: {proc.stderr[-2000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the reference tree (e.g. a worktree of main)")
    parser.add_argument("--b", default=".", help="the tree measured against it (default: this one)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pipeline", default="contrastkit-device", help="a train_bench.py pipeline")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--width", type=float, default=0.25)
    args = parser.parse_args()
    trees = {"a": Path(args.a), "b": Path(args.b)}
    ratios = []
    for r in range(args.rounds):
        order = ("a", "b") if r % 2 == 0 else ("b", "a")
        ips = {}
        for name in order:
            ips[name] = run_tree(trees[name], args)
            print(f"round {r} {name} ({trees[name]}): {ips[name]:.1f} images/s", flush=True)
        ratios.append(ips["b"] / ips["a"])
    print(json.dumps({"pipeline": args.pipeline, "ratios_b_over_a": [round(x, 4) for x in ratios],
                      "median": round(statistics.median(ratios), 4), "min": round(min(ratios), 4),
                      "max": round(max(ratios), 4)}))


if __name__ == "__main__":
    main()
