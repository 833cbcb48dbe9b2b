"""Accuracy per minute: contrastkit's recipe vs the lightly-based recipe at an equal training-time budget.

Both train the same encoder (CIFAR-stem ResNet-18, base width 16, channels_last) on the shared CIFAR-10 JPEGs
(train/) for the same wall-clock training budget, one after the other in separate processes, then are scored by the
same kNN protocol (k=200, cosine, exp(sim/0.1) votes, h, train/ memory, test/ queries, CIFAR-10 mean/std).

The peer recipe is issue 10's (see _pipelines.py). Its cosine schedule spans the steps that fit the budget (a
fractional number of epochs), estimated from a short calibration run, and it trains until the budget is spent.
contrastkit's recipe is RECIPES[--recipe] below (the schedule spans the budget in training seconds). Both report
their training seconds beside their accuracy.

    .venv/bin/python benchmarks/quality_bench.py --budget-s 780            # both, 13 minutes each
    .venv/bin/python benchmarks/quality_bench.py --budget-s 180 --which ours --recipe cifar-budget

Prints progress, a table and, last, one JSON line with both accuracies and their difference.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contrastkit.recipes import RECIPES as LIBRARY_RECIPES  # noqa: E402

#: contrastkit recipes: the library's (what `contrastkit pretrain --recipe NAME` gives users), and the peer's
#: hyper-parameters on contrastkit's engine (batched augmentation, tiled loss) for comparison.
RECIPES = {
    **LIBRARY_RECIPES,
    "peer-settings": dict(LIBRARY_RECIPES["cifar-budget"], batch_size=256, lr=0.06, temperature=0.5,
                          crop_scale=(0.08, 1.0), color_strength=0.5, warmup_epochs=0.0, weight_decay=5e-4),
}


def run_ours(budget_s: float, recipe: dict, log=print) -> dict:
    from _pipelines import knn_cifar, require_cifar

    from contrastkit.config import PretrainConfig
    from contrastkit.models import load_checkpoint_model
    from contrastkit.train import pretrain

    with tempfile.TemporaryDirectory() as out:
        options = dict(method="simclr", encoder="resnet18", width=0.25, cifar_stem="on", proj_hidden_dim=512,
                       proj_dim=128, epochs=100, schedule="time", augment_on="device", num_workers=2,
                       channels_last="on", knn_every=0)
        options.update(recipe)
        options.update(data=require_cifar(), time_budget_s=budget_s, progress=False, log_every=50, out=out)
        cfg = PretrainConfig(**options)
        summary = pretrain(cfg)
        model, _, _ = load_checkpoint_model(Path(out) / "last.pt")
    t0 = time.perf_counter()
    knn = knn_cifar(model.encoder)
    return {"knn_top1": knn, "train_time_s": summary["train_time_s"], "steps": summary["global_step"],
            "epochs_done": round(summary["global_step"] * cfg.batch_size / 50_000, 2),
            "images_per_s": summary["images_per_s"], "knn_time_s": round(time.perf_counter() - t0, 1),
            "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()
                       if k in ("batch_size", "lr", "temperature", "crop_scale", "color_strength", "warmup_epochs",
                                "weight_decay", "optimizer", "lr_scaling")}}


def run_peer(budget_s: float, calibration_steps: int = 12, batch_size: int = 256, log=print) -> dict:
    from _pipelines import knn_cifar, steps_for_budget, train_peer

    _, cal = train_peer(0, epochs=1, batch_size=batch_size, max_steps=calibration_steps, warmup_steps_excluded=2,
                        log=lambda *_: None)
    steps = steps_for_budget(cal["images_per_s"], budget_s, batch_size)
    log(f"peer: calibration {cal['images_per_s']} img/s -> cosine over {steps} steps "
        f"({steps * batch_size / 50_000:.2f} epochs)")
    model, stats = train_peer(budget_s, epochs=0, batch_size=batch_size, total_steps=steps, log=log)
    t0 = time.perf_counter()
    knn = knn_cifar(model.encoder)
    return {"knn_top1": knn, **stats, "planned_steps": steps, "calibration_images_per_s": cal["images_per_s"],
            "knn_time_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=780.0, help="training seconds for each recipe (13 min)")
    parser.add_argument("--which", default="ours,peer", help="ours, peer or both, in this order (comma-separated)")
    parser.add_argument("--recipe", default="cifar-budget", choices=sorted(RECIPES), help="contrastkit recipe")
    parser.add_argument("--recipe-json", default=None, help="override recipe fields, e.g. '{\"lr\": 0.5}'")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    recipe = dict(RECIPES[args.recipe], **json.loads(args.recipe_json or "{}"))
    if args.one:
        result = run_peer(args.budget_s) if args.one == "peer" else run_ours(args.budget_s, recipe)
        print(json.dumps(result))
        return
    results = {}
    for which in args.which.split(","):
        cmd = [sys.executable, __file__, "--one", which, "--budget-s", str(args.budget_s), "--recipe", args.recipe]
        if args.recipe_json:
            cmd += ["--recipe-json", args.recipe_json]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{which} failed (exit {proc.returncode})")
        results[which] = json.loads(proc.stdout.strip().splitlines()[-1])
        results[which]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"{which}: kNN top-1 {results[which]['knn_top1']:.4f} after {results[which]['train_time_s']} s of "
              f"training ({results[which].get('images_per_s')} img/s)", flush=True)
    print("\n| recipe | kNN top-1 | training s | steps | epochs | images/s |\n| --- | --- | --- | --- | --- | --- |")
    for k, v in results.items():
        print(f"| {k} | {v['knn_top1']:.4f} | {v['train_time_s']} | {v['steps']} | {v['epochs_done']} | "
              f"{v['images_per_s']} |")
    out = {"budget_s": args.budget_s, "recipe": args.recipe,
           **{f"{k}_knn_top1": v["knn_top1"] for k, v in results.items()},
           **{f"{k}_train_time_s": v["train_time_s"] for k, v in results.items()}, "results": results}
    if "peer" in results and "ours" in results:
        out["difference"] = round(results["ours"]["knn_top1"] - results["peer"]["knn_top1"], 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
