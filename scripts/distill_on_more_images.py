"""Rerun a few-labels distillation stage on another (larger) image folder, everything else as the stage ran.

    python scripts/distill_on_more_images.py OUT/runs/distill-10pct --data ~/.cache/contrastkit/cifar10 \
        --epochs 2 --out /tmp/distill-10pct-50k

The stage's run folder holds its full configuration (``last.pt``); this replaces ``data``, ``epochs`` and ``out``
and trains it (``--method distill``, :func:`contrastkit.train.pretrain`). It prints the student's and the teacher's test top-1, both
measured on the new folder's test split.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from contrastkit.config import PretrainConfig
from contrastkit.models import load_checkpoint
from contrastkit.train import pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage_run", type=Path, help="a distillation stage's run folder (OUT/runs/distill-*)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config = PretrainConfig.from_dict(load_checkpoint(args.stage_run / "last.pt")["config"])
    cfg = dataclasses.replace(config, data=args.data, epochs=args.epochs, out=args.out, progress=False)
    summary = pretrain(cfg)
    print(json.dumps({"student_top1": summary["student_top1"], "teacher_top1": summary["teacher_top1"],
                      "steps": summary["global_step"], "train_time_s": summary["train_time_s"]}))


if __name__ == "__main__":
    main()
