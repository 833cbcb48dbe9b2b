#!/usr/bin/env python
"""Choose the demo's pretraining recipe on a validation split carved from digits' TRAINING split.

The demo (`contrastkit demo`) reports test-split accuracy; its recipe must not be chosen on that split. This
script writes digits' 1,437 training images as an image folder, 80% as `train/` and a stratified 20% as `test/`
(the validation split; digits' own 360 test images are never read), pretrains each candidate recipe on the 80%
with the demo's code, and scores the SimCLR encoder, the random encoder and raw pixels on the validation
split exactly as the demo scores them on the test split ("augmented": one view of the pretraining augmentation
per image, the demo's evaluation; "clean": the images as they are). One JSON line per candidate.

    python scripts/demo_tune.py --out /tmp/demo_tune [--only NAME ...] [--epochs 25] [--score-only]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from contrastkit.experiments.demo import CANDIDATES, demo_config, digits_validation_folder, evaluate_encoders
from contrastkit.evaluate import evaluation_data
from contrastkit.models import load_checkpoint_model
from contrastkit.train import pretrain


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo_tune")
    p.add_argument("--only", nargs="*", default=None, help="candidate names (default: all of demo.CANDIDATES)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score-only", action="store_true", help="score the runs already in --out, do not train")
    args = p.parse_args()
    out = Path(args.out)
    folder = digits_validation_folder(out / "digits_val")
    for name in args.only or list(CANDIDATES):
        t0 = time.perf_counter()
        cfg = demo_config(out / name, args.epochs, args.seed, data=str(folder), recipe=name)
        cfg.progress = False
        summary = json.loads((Path(cfg.out) / "summary.json").read_text()) if args.score_only else pretrain(cfg)
        model, meta, _ = load_checkpoint_model(Path(cfg.out) / "last.pt")
        data = evaluation_data(str(folder), meta.image_size, meta.mean, meta.std, seed=args.seed)
        scores = {kind: evaluate_encoders(model, cfg, data, args.seed, augmented=kind == "augmented")
                  for kind in ("augmented", "clean")}
        print(json.dumps({"candidate": name, "overrides": CANDIDATES[name], "epochs": cfg.epochs,
                          "split": "validation (20% of digits train)", "scores": scores,
                          "train_time_s": round(summary["train_time_s"], 1),
                          "wall_s": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
