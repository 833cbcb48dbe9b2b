#!/usr/bin/env python
"""Build an ImageFolder holding only the labelled part of a semi-supervised SupCon run.

``contrastkit pretrain --method supcon --labeled-fraction F --seed S`` keeps the labels of
``contrastkit.evaluate.class_balanced_subset(train_labels, F, seed=S)`` over the training labels in
the order contrastkit loads them (``contrastkit.data.load_dataset(path).train``) and marks the rest -1
(see ``contrastkit.methods.labels.class_labels``). This script links exactly those training images
(symlinks, no copies) into OUT/train/<class>/ and links the full test split as OUT/test, so that
"SupCon on the labelled part alone" trains on the same images whose labels the semi-supervised run sees.

    python scripts/make_labelled_subset.py ~/.cache/contrastkit/cifar10 /tmp/cifar10-lab10 --fraction 0.1 --seed 0
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from contrastkit.data import load_dataset
from contrastkit.evaluate import class_balanced_subset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="ImageFolder with train/ and test/ class subfolders")
    p.add_argument("out", help="new folder (must not exist, or be an earlier output of this script)")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="the pretraining run's --seed")
    args = p.parse_args()

    src = Path(os.path.expanduser(args.data)).resolve()
    out = Path(args.out)
    splits = load_dataset(str(src), seed=args.seed)
    train = splits.train
    labels = torch.as_tensor(list(train.targets), dtype=torch.long)
    keep = class_balanced_subset(labels, args.fraction, seed=args.seed)
    if out.exists():
        marker = out / "subset.json"
        if not marker.is_file():
            raise SystemExit(f"{out} exists and was not written by this script; choose another folder")
        old = json.loads(marker.read_text())
        if old.get("indices") == keep.tolist() and old.get("source") == str(src):
            print(f"{out}: already holds this subset ({len(keep)} images)")
            return
        raise SystemExit(f"{out} holds another subset; remove it first")
    (out / "train").mkdir(parents=True)
    for i in keep.tolist():
        path = Path(train.samples[i][0])
        dest = out / "train" / path.parent.name / path.name
        dest.parent.mkdir(exist_ok=True)
        dest.symlink_to(path)
    (out / "test").symlink_to(src / "test", target_is_directory=True)
    (out / "subset.json").write_text(json.dumps({"source": str(src), "fraction": args.fraction,
                                                 "seed": args.seed, "indices": keep.tolist()}) + "\n")
    # Check: the linked folder loads with the same classes and the kept labels.
    check = load_dataset(str(out), seed=args.seed)
    if check.classes != splits.classes:
        raise SystemExit(f"class order changed: {check.classes} vs {splits.classes}")
    linked = {(Path(path).parent.name, Path(path).name): label for path, label in check.train.samples}
    wanted = {(Path(train.samples[i][0]).parent.name, Path(train.samples[i][0]).name): int(labels[i])
              for i in keep.tolist()}
    if linked != wanted:
        raise SystemExit("the linked folder does not load as the kept subset")
    counts = torch.bincount(torch.as_tensor(list(check.train.targets))).tolist()
    print(f"{out}: {len(keep)} of {len(labels)} training images linked, per class {counts}; test -> {src / 'test'}")


if __name__ == "__main__":
    main()
