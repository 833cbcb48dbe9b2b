#!/usr/bin/env python
"""kNN and linear evaluation of a checkpoint from ONE feature extraction.

`contrastkit eval --protocol knn` and `--protocol linear` each extract the frozen features again, and
`--protocol all` adds fine-tuning and retrieval; on a 2-core machine the extraction is the expensive part.
This runs the same two protocols through the same library code (`contrastkit.evaluate.run_protocol`, the
function behind `contrastkit eval`), sharing the features, and writes `eval_knn_linear[_DATA].json`
beside the checkpoint.

    python scripts/eval_knn_linear.py --checkpoint runs/x/last.pt [--data PATH] [--epochs 100]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from contrastkit.evaluate import evaluation_data, run_protocol
from contrastkit.models import load_checkpoint_model
from contrastkit.runtime import resolve_device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=None, help="data set to evaluate on (default: the checkpoint's)")
    p.add_argument("--epochs", type=int, default=None, help="linear-probe epochs (default: the protocol's, 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=2)
    args = p.parse_args()

    t0 = time.perf_counter()
    device = resolve_device("auto")
    model, meta, cfg = load_checkpoint_model(args.checkpoint, device)
    data = args.data or meta.data
    evdata = evaluation_data(data, meta.image_size, meta.mean, meta.std, seed=cfg.get("seed", 0),
                             num_workers=args.num_workers)
    feats: dict = {}
    out = {"checkpoint": args.checkpoint, "data": data, "pretrained_on": meta.data, "method": meta.method,
           "labeled_fraction": cfg.get("labeled_fraction", 1.0)}
    for name in ("knn", "linear"):
        out[name] = run_protocol(name, model, evdata, epochs=args.epochs, device=device, seed=args.seed,
                                 cfg=cfg, feats=feats)
    out["wall_time_s"] = round(time.perf_counter() - t0, 2)
    suffix = "" if data == meta.data else "_" + Path(os.path.expanduser(data)).name
    path = Path(args.checkpoint).parent / f"eval_knn_linear{suffix}.json"
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(json.dumps({"checkpoint": args.checkpoint, "data": data, "knn_top1": out["knn"]["metrics"].get("top1"),
                      "linear_top1": out["linear"]["metrics"].get("top1"), "wall_time_s": out["wall_time_s"],
                      "written": str(path)}))


if __name__ == "__main__":
    main()
