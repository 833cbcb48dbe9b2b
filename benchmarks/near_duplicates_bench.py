"""Near-duplicates against a ground truth: contrastkit's calibrated threshold and imagededup's hashes (issue 28).

    python benchmarks/near_duplicates_bench.py --work /tmp/neardup \
        --encoder 3min=/tmp/enc180/last.pt --encoder 13min=/tmp/enc780/last.pt --imagededup

**The data.** The 10,000 CIFAR-10 test images, plus one planted copy of each of 1,800 of them (seeded): 300
copies per edit kind of :mod:`contrastkit.search.edits` (JPEG, rescale, crop, shift, brightness/contrast,
rotation), one edit per copy, saved as PNG (so the edit is the only change). The ground truth is the 1,800
(original, copy) pairs (``WORK/truth.json``). The benchmark's edits are drawn with seed 1; calibration draws
its own with seed 0 on its own sample of the index.

**contrastkit.** For each ``--encoder NAME=CHECKPOINT``: ``contrastkit index`` of the folder, then
``near_duplicates(index, "auto")`` (what ``contrastkit search --near-duplicates`` runs): the threshold is
calibrated on the index's own images at ``--target-precision`` (nothing here tunes it on the ground truth).
The reported pairs are all pairs inside each group.

**imagededup.** PHash and DHash (``pip install imagededup``), ``find_duplicates`` on the same folder at their
default Hamming distance (10 of 64 bits); the reported pairs are the pairs it lists. Its CNN method downloads
its weights from the internet, which this machine cannot reach, so it is not run.

**Ablation** (``--ablation NAME``, on an index the benchmark built): which part of the near-duplicate score
does what. For each similarity, the threshold is set where 1% of the unplanted images are linked to some
other image (so every row has the same false-link rate, and no calibration is involved), and the recall of
each edit kind is reported: cosine of h (what the index searches with), the score computed on h, cosine of
the near-duplicate vectors (h averaged over moved views), the same centred, whitened, and the score (whitened,
relative to the neighbourhood).

**Scores.** precision = true pairs reported / pairs reported, recall = true pairs reported / 1,800, F1 of
the two. Pairs between two unplanted test images count as false here, although CIFAR-10's test split holds
near-duplicates of its own (the same photograph cropped a little differently): the column "unplanted" says
how many such pairs were reported, "P planted" is the precision over the pairs that touch a planted image,
and ``WORK/unplanted-NAME.png`` shows the 40 best-scoring unplanted pairs, for a look. Per edit kind: recall
over that kind's 300 pairs, precision over the reported pairs that touch one of its images.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from contrastkit.search import EDIT_KINDS, ImageIndex, apply_edit, build_index, near_duplicates  # noqa: E402


def _load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def plant(test: Path, work: Path, per_edit: int, seed: int) -> list[dict]:
    """Copy the test images into ``work/images`` and plant one edited copy of ``per_edit`` images per edit kind.

    Returns (and writes to ``work/truth.json``) the planted pairs: ``{"original", "copy", "edit"}``.
    """
    truth_file = work / "truth.json"
    if truth_file.is_file():
        return json.loads(truth_file.read_text())
    files = sorted(test.rglob("*.jpg"))
    if not files:
        raise SystemExit(f"no .jpg under {test}")
    images = work / "images"
    for p in files:
        target = images / p.parent.name / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(p.read_bytes())
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(files), per_edit * len(EDIT_KINDS), replace=False)
    (images / "copies").mkdir(exist_ok=True)
    truth = []
    for n, i in enumerate(chosen.tolist()):
        kind = EDIT_KINDS[n // per_edit]
        src = files[i]
        with Image.open(src) as img:
            copy = apply_edit(img.convert("RGB"), kind, rng)
        target = images / "copies" / f"{src.parent.name}_{src.stem}_{kind}.png"
        copy.save(target)
        truth.append({"original": str((images / src.parent.name / src.name).resolve()),
                      "copy": str(target.resolve()), "edit": kind})
    truth_file.write_text(json.dumps(truth, indent=1))
    return truth


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def score(reported: set[tuple[str, str]], truth: list[dict]) -> dict:
    """Overall and per-edit precision and recall of ``reported`` pairs against the planted pairs."""
    true_pairs = {_pair(t["original"], t["copy"]): t["edit"] for t in truth}
    planted = {p for t in truth for p in (t["original"], t["copy"])}
    kind_of = {p: t["edit"] for t in truth for p in (t["original"], t["copy"])}
    hit = reported & set(true_pairs)
    touching = [q for q in reported if q[0] in planted or q[1] in planted]
    out = {"reported": len(reported), "hit": len(hit), "precision": len(hit) / len(reported) if reported else 1.0,
           "recall": len(hit) / len(true_pairs), "unplanted": len(reported) - len(touching),
           "precision_planted": len(hit) / len(touching) if touching else 1.0}
    p, r = out["precision"], out["recall"]
    out["f1"] = 2 * p * r / (p + r) if p + r else 0.0
    for kind in EDIT_KINDS:
        touching = {q for q in reported if kind_of.get(q[0]) == kind or kind_of.get(q[1]) == kind}
        kind_hit = {q for q in hit if true_pairs[q] == kind}
        out[kind] = {"recall": len(kind_hit) / sum(1 for k in true_pairs.values() if k == kind),
                     "precision": len(kind_hit) / len(touching) if touching else 1.0}
    return out


def run_encoder(name: str, checkpoint: str, work: Path, target: float, recalibrate: bool) -> dict:
    index = work / f"index-{name}"
    if not index.exists():
        t0 = time.perf_counter()
        build_index(checkpoint, work / "images", index, device="cpu", num_workers=2, progress=False)
        print(f"[{name}] indexed in {time.perf_counter() - t0:.0f} s; {_load()}", flush=True)
    t0 = time.perf_counter()
    result = near_duplicates(index, "auto", target_precision=target, device="cpu", recalibrate=recalibrate)
    elapsed = time.perf_counter() - t0
    print(f"[{name}] {result.calibration.summary()}", flush=True)
    print(f"[{name}] {len(result.groups)} groups in {elapsed:.1f} s (calibration {result.calibration.seconds} s"
          f"{', reused' if result.reused else ''}); {_load()}", flush=True)
    reported = {_pair(a, b) for g in result.groups for i, a in enumerate(g.paths) for b in g.paths[i + 1:]}
    _unplanted_picture(reported, _truth(work), work / f"unplanted-{name}.png")
    cal = result.calibration
    return {"threshold": f"{result.threshold:.4f} (auto)", "estimate": f"{cal.estimated_precision:.3f} / "
            f"{cal.estimated_recall:.3f}", **score(reported, _truth(work))}


def _unplanted_picture(reported: set[tuple[str, str]], truth: list[dict], out: Path, most: int = 40) -> None:
    """The first ``most`` reported pairs between two unplanted images, side by side, four pairs a row."""
    planted = {p for t in truth for p in (t["original"], t["copy"])}
    pairs = sorted(q for q in reported if q[0] not in planted and q[1] not in planted)[:most]
    if not pairs:
        return
    sheet = Image.new("RGB", (4 * 72, -(-len(pairs) // 4) * 34), "white")
    for n, (a, b) in enumerate(pairs):
        x, y = (n % 4) * 72, (n // 4) * 34
        for dx, path in ((0, a), (33, b)):
            with Image.open(path) as img:
                sheet.paste(img.convert("RGB").resize((32, 32)), (x + dx, y))
    sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST).save(out)


def _truth(work: Path) -> list[dict]:
    return json.loads((work / "truth.json").read_text())


def run_imagededup(method_name: str, work: Path) -> dict:
    try:
        from imagededup import methods
    except ImportError:
        raise SystemExit("imagededup is not installed: pip install imagededup")
    method = getattr(methods, method_name)(verbose=False)
    t0 = time.perf_counter()
    found = method.find_duplicates(image_dir=str(work / "images"), recursive=True)
    elapsed = time.perf_counter() - t0
    root = (work / "images").resolve()

    def full(p: str) -> str:
        return str((root / p).resolve()) if not os.path.isabs(p) else p

    reported = {_pair(full(a), full(b)) for a, dups in found.items() for b in dups}
    print(f"[{method_name}] {len(reported)} pairs in {elapsed:.1f} s; {_load()}", flush=True)
    return {"threshold": "Hamming <= 10 (default)", "estimate": "-", **score(reported, _truth(work))}


def ablation(name: str, work: Path) -> None:
    """Recall per edit kind at a 1% false-link rate among unplanted images, for each stage of the score."""
    import torch

    from contrastkit.search.dup_space import DuplicateSpace

    idx = ImageIndex.load(work / f"index-{name}", backend="torch")
    truth = _truth(work)
    row = {p: i for i, p in enumerate(idx.paths)}
    planted = {row[p] for t in truth for p in (t["original"], t["copy"])}
    clean = torch.tensor([i for i in range(len(idx)) if i not in planted])
    pairs = {k: torch.tensor([(row[t["original"]], row[t["copy"]]) for t in truth if t["edit"] == k])
             for k in EDIT_KINDS}
    dup = np.array(idx.dup_vectors())
    space = DuplicateSpace.fit(dup)
    h = np.array(idx.vectors)
    h_space = DuplicateSpace.fit(h)
    centred_only = DuplicateSpace(space.mean, np.eye(dup.shape[1], dtype=np.float32), space.reference, 0, False)
    stages = {"cosine of h": (torch.from_numpy(h), None),
              "the score, on h (no views)": (h_space.transform(h), h_space),
              "cosine of the near-duplicate vectors": (torch.from_numpy(dup), None),
              "the same, centred": (centred_only.transform(dup), None),
              "the same, whitened": (space.transform(dup), None),
              "whitened, relative to the neighbourhood (the score)": (space.transform(dup), space)}
    print(f"\n[{name}] recall at the threshold linking 1% of the unplanted images; {_load()}")
    print("| similarity | threshold | mean | " + " | ".join(EDIT_KINDS) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in EDIT_KINDS) + " |")
    n = len(idx)
    for label, (z, sp) in stages.items():
        sims = z[clean] @ z.T  # (clean, N)
        if sp is not None:
            sims = sp.scores(sims, clean, torch.arange(n))
        sims[torch.arange(len(clean)), clean] = -float("inf")
        t = float(np.quantile(sims.max(1).values.numpy(), 0.99))
        recalls = []
        for p in pairs.values():
            s = (z[p[:, 0]] * z[p[:, 1]]).sum(1)[:, None]
            if sp is not None:
                s = torch.stack([sp.scores(s[i:i + 1], p[i:i + 1, 0], p[i:i + 1, 1])[0] for i in range(len(p))])
            recalls.append(float((s.flatten() >= t).float().mean()))
        print(f"| {label} | {t:.4f} | {np.mean(recalls):.3f} | " + " | ".join(f"{r:.2f}" for r in recalls) + " |")


def _table(rows: dict[str, dict]) -> None:
    print("\n| method | threshold | estimated P / R | precision | recall | F1 | pairs | unplanted | P planted | "
          + " | ".join(f"{k} P / R" for k in EDIT_KINDS) + " |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in EDIT_KINDS)
          + " |")
    for name, s in rows.items():
        kinds = " | ".join(f"{s[k]['precision']:.2f} / {s[k]['recall']:.2f}" for k in EDIT_KINDS)
        print(f"| {name} | {s['threshold']} | {s['estimate']} | {s['precision']:.3f} | {s['recall']:.3f} | "
              f"{s['f1']:.3f} | {s['reported']} | {s['unplanted']} | {s['precision_planted']:.3f} | {kinds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", default="~/.cache/contrastkit/cifar10/test")
    parser.add_argument("--work", default="/tmp/neardup")
    parser.add_argument("--encoder", action="append", default=[], metavar="NAME=CHECKPOINT")
    parser.add_argument("--imagededup", action="store_true", help="also imagededup's PHash and DHash")
    parser.add_argument("--per-edit", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--recalibrate", action="store_true", help="ignore a calibration stored in the index")
    parser.add_argument("--ablation", metavar="NAME", help="the ablation table of encoder NAME's index (built "
                                                          "by an earlier run) instead")
    args = parser.parse_args()
    work = Path(os.path.expanduser(args.work))
    if args.ablation:
        ablation(args.ablation, work)
        return
    truth = plant(Path(os.path.expanduser(args.test)), work, args.per_edit, args.seed)
    print(f"{len(truth)} planted pairs in {work / 'images'}; {_load()}", flush=True)
    rows = {}
    for spec in args.encoder:
        name, _, checkpoint = spec.partition("=")
        rows[f"contrastkit, {name} encoder"] = run_encoder(name, checkpoint, work, args.target_precision,
                                                           args.recalibrate)
    if args.imagededup:
        for method in ("PHash", "DHash"):
            rows[f"imagededup {method}"] = run_imagededup(method, work)
    _table(rows)
    print(f"\nafter: {_load()}")


if __name__ == "__main__":
    main()
