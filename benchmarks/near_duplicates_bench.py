"""Near-duplicate detection on a planted set: precision and recall against the similarity threshold (issue 19).

    python benchmarks/near_duplicates_bench.py --checkpoint /tmp/cifar_enc/last.pt \
        --test ~/.cache/contrastkit/cifar10/test --work /tmp/neardup

The collection is the 10,000 CIFAR-10 test images plus three altered copies of each of 2 x 300 of them (two
disjoint, seeded sets A and B): *resized* (down to 20 px and saved as PNG; the index scales it back to 32),
*re-encoded* (JPEG quality 20) and *cropped* (the central 26 x 26, 66% of the area). An original and its
copies form a planted group. The threshold is chosen on set A (the best F1) and precision and recall are
reported on set B at that threshold, so the figure is not tuned on the pairs it scores.

Pairs are those inside a group of :func:`contrastkit.search.near_duplicate_groups` (connected components):
precision = planted pairs found / pairs reported, recall = planted pairs found / planted pairs, each
counted over the pairs that touch the set's groups. Pairs between two unplanted test images are listed
separately: CIFAR-10's test split holds some genuine near-duplicates, and these are not errors of the method.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from contrastkit.search import ImageIndex, build_index, near_duplicate_groups  # noqa: E402

ALTERATIONS = ("resized", "reencoded", "cropped")


def _alter(img: Image.Image, how: str) -> tuple[Image.Image, dict]:
    if how == "resized":
        return img.resize((20, 20), Image.BICUBIC), {"format": "PNG"}
    if how == "reencoded":
        return img, {"format": "JPEG", "quality": 20}
    return img.crop((3, 3, 29, 29)), {"format": "PNG"}


def plant(test: Path, work: Path, per_set: int, seed: int) -> dict[str, list[list[str]]]:
    """Copy the test images and altered copies into ``work/images``; returns the planted groups of A and B."""
    files = sorted(test.rglob("*.jpg"))
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    for p in files:
        target = images / p.parent.name / p.name
        target.parent.mkdir(exist_ok=True)
        if not target.exists():
            target.write_bytes(p.read_bytes())
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(files), 2 * per_set, replace=False)
    sets: dict[str, list[list[str]]] = {"A": [], "B": []}
    for n, i in enumerate(chosen):
        src = files[i]
        original = str((images / src.parent.name / src.name).resolve())
        group = [original]
        with Image.open(src) as img:
            img = img.convert("RGB")
            for how in ALTERATIONS:
                copy, opts = _alter(img, how)
                ext = ".png" if opts["format"] == "PNG" else ".jpg"
                target = images / "copies" / f"{src.parent.name}_{src.stem}_{how}{ext}"
                target.parent.mkdir(exist_ok=True)
                copy.save(target, **opts)
                group.append(str(target.resolve()))
        sets["A" if n < per_set else "B"].append(group)
    return sets


def _pairs_in(groups: list[list[int]]) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for g in groups for i, a in enumerate(g) for b in g[i + 1:]}


def score(found: list[list[int]], planted: list[list[int]]) -> tuple[float, float, int]:
    """Precision and recall of ``found`` over the pairs touching ``planted`` groups; and the pairs reported."""
    members = {r for g in planted for r in g}
    truth = _pairs_in(planted)
    reported = {p for p in _pairs_in([g for g in found if members & set(g)]) if p[0] in members or p[1] in members}
    hit = len(reported & truth)
    precision = hit / len(reported) if reported else 1.0
    return precision, hit / len(truth), len(reported)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--test", default="~/.cache/contrastkit/cifar10/test")
    parser.add_argument("--work", default="/tmp/neardup")
    parser.add_argument("--per-set", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thresholds", type=float, nargs="+",
                        default=[0.99, 0.993, 0.995, 0.996, 0.997, 0.998, 0.999])
    args = parser.parse_args()
    work = Path(args.work)
    sets = plant(Path(os.path.expanduser(args.test)), work, args.per_set, args.seed)
    index = work / "index"
    if not index.exists():
        t0 = time.perf_counter()
        build_index(args.checkpoint, work / "images", index, device="cpu", num_workers=2, progress=False)
        print(f"indexed in {time.perf_counter() - t0:.0f} s")
    idx = ImageIndex.load(index, backend="torch")
    row = {p: i for i, p in enumerate(idx.paths)}
    planted = {name: [[row[p] for p in g] for g in groups] for name, groups in sets.items()}
    plantedset = {r for groups in planted.values() for g in groups for r in g}
    vectors = torch.from_numpy(np.array(idx.vectors))
    print(f"{len(idx)} images, {sum(len(g) for g in sets.values())} planted groups of 4; load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| threshold | A precision | A recall | B precision | B recall | unplanted pairs | groups | s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    table = []
    for t in args.thresholds:
        t0 = time.perf_counter()
        try:
            found = near_duplicate_groups(vectors, t)
        except ValueError as exc:
            print(f"| {t} | {exc} |")
            continue
        elapsed = time.perf_counter() - t0
        pa, ra, _ = score(found, planted["A"])
        pb, rb, _ = score(found, planted["B"])
        other = len([p for p in _pairs_in(found) if p[0] not in plantedset and p[1] not in plantedset])
        f1a = 2 * pa * ra / (pa + ra) if pa + ra else 0.0
        table.append((f1a, t, pb, rb))
        print(f"| {t} | {pa:.3f} | {ra:.3f} | {pb:.3f} | {rb:.3f} | {other} | {len(found)} | {elapsed:.1f} |")
    f1, t, pb, rb = max(table)
    print(f"threshold chosen on A (best F1 {f1:.3f}): {t}; on B: precision {pb:.3f}, recall {rb:.3f}")
    found = near_duplicate_groups(vectors, t)
    for how_i, how in enumerate(ALTERATIONS):  # recall per alteration at that threshold, on B
        group_of = {r: gi for gi, g in enumerate(found) for r in g}
        hits = [g[0] in group_of and group_of.get(g[1 + how_i]) == group_of[g[0]] for g in planted["B"]]
        print(f"  B, {how} copy grouped with its original: {sum(hits) / len(hits):.3f}")


if __name__ == "__main__":
    main()
