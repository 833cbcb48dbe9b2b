"""Combine `contrastkit experiment few-labels` runs made with different seeds: one table and one figure.

    python scripts/few_labels_seeds.py OUT_SEED0 OUT_SEED1 ... [--figure docs/claims/few-labels-cpu.png]

Reads each folder's ``results.json`` (its seed) and ``stages/*.json`` (top-1 of every stage), prints a markdown
table (per stage and label fraction: the mean, then each seed's value), each claim's margin per seed, and draws the
means with each seed as a dot.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

from contrastkit.experiments.few_labels import FRACTIONS, ROW_NAMES, ROWS

CLAIMS = [("fine-tuning beats scratch", "simclr-h", "scratch"),
          ("head layer 1 beats h", "head3-layer1", "simclr-h"),
          ("distillation improves on the fine-tuned teacher", "distilled", "head3-layer1"),
          ("(within the 3-layer head) layer 1 beats h", "head3-layer1", "head3-h")]


def load(folder: Path) -> tuple[int, dict[tuple[str, float], float]]:
    seed = json.loads((folder / "results.json").read_text())["seed"]
    values = {}
    for path in sorted((folder / "stages").glob("*.json")):
        record = json.loads(path.read_text())
        values[(record["labels"]["row"], record["labels"]["fraction"])] = record["metrics"]["top1"]
    return seed, values


def table(runs: list[tuple[int, dict]]) -> str:
    seeds = "/".join(str(s) for s, _ in runs)
    lines = [f"| stage | 1% labels: mean (seeds {seeds}) | 10% labels: mean (seeds {seeds}) |", "|---|---|---|"]
    for row in ROWS:
        cells = []
        for f in FRACTIONS:
            vals = [v[(row, f)] for _, v in runs]
            cells.append(f"{mean(vals):.1f} ({' / '.join(f'{x:.1f}' for x in vals)})")
        lines.append(f"| {ROW_NAMES[row]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def margins(runs: list[tuple[int, dict]]) -> str:
    lines = []
    for name, a, b in CLAIMS:
        parts = []
        for f in FRACTIONS:
            d = [v[(a, f)] - v[(b, f)] for _, v in runs]
            parts.append(f"{100 * f:g}%: mean {mean(d):+.1f} ({' / '.join(f'{x:+.1f}' for x in d)}; "
                         f"ahead in {sum(x > 0 for x in d)} of {len(d)})")
        lines.append(f"- {name}: " + "; ".join(parts))
    return "\n".join(lines)


def figure(runs: list[tuple[int, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(ROWS)
    for i, row in enumerate(ROWS):
        for j, f in enumerate(FRACTIONS):
            vals = [v[(row, f)] for _, v in runs]
            x = j + (i - (len(ROWS) - 1) / 2) * width
            ax.bar(x, mean(vals), width, color=f"C{i}", label=ROW_NAMES[row] if j == 0 else None)
            ax.plot([x] * len(vals), vals, "k.", markersize=4)
    ax.set_xticks(range(len(FRACTIONS)), [f"{100 * f:g}% labels" for f in FRACTIONS])
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"few-labels, cpu budget: mean of seeds {', '.join(str(s) for s, _ in runs)} (dots: each seed)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    runs = [load(f) for f in args.folders]
    print(table(runs))
    print()
    print(margins(runs))
    if args.figure:
        figure(runs, args.figure)


if __name__ == "__main__":
    main()
