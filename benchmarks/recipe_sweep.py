"""The recipe sweep: kNN accuracy of SimCLR recipes at a fixed modelled time, independent of the machine's load.

Why a model of time: the recipes are meant for a time budget, but on a machine shared with other jobs the seconds a
step takes vary from minute to minute, so a wall-clock budget would score the load as much as the recipe. Here each
step advances a *modelled clock* by what a step of that kind (precision, width, batch, view size) costs, from a
table measured with ``recipe_step_bench.py`` (``--costs``). The learning-rate schedule (warm-up + cosine) and the
resolution schedule follow that clock, as ``contrastkit pretrain --schedule time`` follows training seconds, and
training stops when it reaches ``--budget``. Two runs of one recipe see the same steps whatever the load; a recipe
with cheaper steps (bf16, small views, a larger batch) gets more of them.

Validation, never the test split: the CIFAR-10 training JPEGs are split once (seeded, 500 images of each class held
out): 45,000 train the encoder and are the kNN memory, 5,000 are the kNN queries (k=200, cosine, exp(sim/0.1)
votes, on h, CIFAR-10 mean/std, fp32). The step is the library's: ``BatchAugment`` (views of the chosen size),
``build_model`` (CIFAR stem, channels_last), the tiled ``NTXentLoss``, ``build_optimizer`` (SGD or LARS without
decay on biases and norms), ``scaled_lr`` and ``warmup_cosine``, glibc malloc tuned.

    # the cost table: CPU seconds per step, one thread, of every kind of step the recipes take
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recipe_step_bench.py --threads 1 --rounds 3 \
        --variants prec=bf16/width=0.25/batch=64/size=16,... --write-costs benchmarks/results/step_costs.json
    # one recipe (options of contrastkit pretrain, plus warmup: the warm-up's fraction of the budget)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recipe_sweep.py --budget 600 --set '{"lr": 0.6}' --name lr0.6
    # a grid of recipes over a base, each in its own process, results appended to the log (finished ones skipped)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recipe_sweep.py --budget 600 --grid grid.json --log sweep.jsonl

``clock_precision`` (a recipe key) times a recipe's steps as if they ran in that precision: bf16 with
``clock_precision: fp32`` takes exactly the steps of the fp32 recipe, which tells whether bf16 holds the accuracy
step for step. A grid file is a JSON list of ``{"name": ..., "set": {...}}``. Each result is one JSON line: the
recipe, the budget, steps and images per view size, the kNN top-1 on the validation split, wall seconds and the load
average.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HERE = Path(__file__).resolve().parent
#: the starting point of the sweep: the cifar-budget recipe's options (warmup: fraction of the budget)
BASE = dict(encoder="resnet18", width=0.25, proj_hidden_dim=512, proj_dim=128, head_layers=2, batch_size=64,
            lr=0.6, lr_scaling="linear", momentum=0.9, temperature=0.2, crop_scale=[0.2, 1.0], color_strength=0.5,
            warmup=0.0, min_lr_ratio=0.0, weight_decay=5e-4, optimizer="sgd", precision="fp32", size_schedule="",
            seed=0, clock_precision=None)


def load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def step_cost(costs: dict, recipe: dict, size: int) -> float:
    """Modelled seconds of one step of ``recipe`` on ``size``-px views (the ``--costs`` table)."""
    precision = recipe["clock_precision"] or recipe["precision"]
    key = f"prec={precision}/width={recipe['width']:g}/batch={recipe['batch_size']}/size={size}"
    if recipe["encoder"] != "resnet18":
        key += f"/encoder={recipe['encoder']}"
    if key not in costs:
        raise SystemExit(f"no step cost for {key} in the --costs table; measure it with benchmarks/"
                         f"recipe_step_bench.py --variants {key} and add it")
    return costs[key]


def validation_split(seed: int = 0, per_class: int = 500):
    """(train images, train labels, val images, val labels): the CIFAR-10 training array split by class."""
    import torch
    from _pipelines import require_cifar

    from contrastkit.data import decode_to_array, load_dataset

    root = require_cifar()
    splits = load_dataset(root)
    images, labels = decode_to_array(splits.train, 32, num_workers=2, cache_key=os.path.abspath(root) + "/train")
    labels = torch.as_tensor(labels)
    gen = torch.Generator().manual_seed(seed)
    val = torch.cat([torch.nonzero(labels == c).squeeze(1)[torch.randperm(int((labels == c).sum()), generator=gen)]
                     [:per_class] for c in range(int(labels.max()) + 1)])
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return images[keep], labels[keep], images[val], labels[val]


def batches(n: int, batch: int, gen):
    """Indices of shuffled batches, epoch after epoch (the last short batch of each epoch dropped)."""
    import torch

    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1, batch):
            yield order[i:i + batch]


def train(recipe: dict, budget: float, costs: dict, images, log=print):
    """Train on ``images`` until the modelled clock reaches ``budget``; returns (encoder, stats)."""
    import torch

    from contrastkit import build_model
    from contrastkit.augment import BatchAugment, parse_size_schedule
    from contrastkit.losses import NTXentLoss
    from contrastkit.runtime import tune_malloc
    from contrastkit.train.optim import build_optimizer, scaled_lr, warmup_cosine

    tune_malloc()
    torch.manual_seed(recipe["seed"])
    model = build_model(recipe["encoder"], cifar_stem=True, width=recipe["width"], head_layers=recipe["head_layers"],
                        proj_hidden_dim=recipe["proj_hidden_dim"], proj_dim=recipe["proj_dim"])
    model = model.to(memory_format=torch.channels_last).train()
    sizes = parse_size_schedule(recipe["size_schedule"], 32)
    augment = BatchAugment.from_preset("cifar", n_views=2, crop_scale=tuple(recipe["crop_scale"]),
                                       color_strength=recipe["color_strength"])
    criterion = NTXentLoss(temperature=recipe["temperature"], check_values=False, even_batches=True)
    B = recipe["batch_size"]
    peak = scaled_lr(recipe["lr"], B, recipe["lr_scaling"])
    optimizer = build_optimizer(model, recipe["optimizer"], peak, recipe["momentum"], recipe["weight_decay"])
    gen = torch.Generator().manual_seed(recipe["seed"])
    bf16 = recipe["precision"] == "bf16"
    clock, step, per_size, t0 = 0.0, 0, {}, time.perf_counter()
    for idx in batches(len(images), B, gen):
        if clock >= budget:
            break
        progress = clock / budget
        size = sizes.size_at(progress) if sizes else 32
        factor = warmup_cosine(int(10_000 * progress), 10_000, int(10_000 * recipe["warmup"]), recipe["min_lr_ratio"])
        for group in optimizer.param_groups:
            group["lr"] = peak * factor
        with torch.no_grad():
            x = torch.cat(augment(images[idx], generator=gen, size=size))  # (2B, 3, S, S), view-major
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, z = model(x)  # (2B, D)
        z = z.float().view(2, B, -1)  # (2, B, D)
        loss = criterion(z[0], z[1])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss at step {step}")
        clock += step_cost(costs, recipe, size)
        step += 1
        per_size[size] = per_size.get(size, 0) + 1
        if step % 200 == 0:
            log(f"step {step} clock {clock:.0f}/{budget:.0f} size {size} loss {loss.item():.3f} "
                f"({time.perf_counter() - t0:.0f} s wall)")
    images_seen = step * B
    return model.encoder, {"steps": step, "images": images_seen, "epochs": round(images_seen / len(images), 2),
                           "steps_per_size": {str(k): v for k, v in sorted(per_size.items())},
                           "final_loss": round(loss.item(), 4), "train_wall_s": round(time.perf_counter() - t0, 1)}


def knn_val(encoder, train_images, train_labels, val_images, val_labels) -> float:
    """kNN top-1 (k=200, cosine, exp(sim/0.1) votes) of the validation queries against the training memory."""
    from contrastkit.augment import CIFAR10_MEAN_STD
    from contrastkit.data import EvalDataset
    from contrastkit.evaluate import extract_features, knn_accuracy

    mean, std = CIFAR10_MEAN_STD
    ftr, ltr = extract_features(encoder, EvalDataset(train_images, train_labels, mean=mean, std=std), batch_size=1024)
    fva, lva = extract_features(encoder, EvalDataset(val_images, val_labels, mean=mean, std=std), batch_size=1024)
    return float(knn_accuracy(ftr, ltr, fva, lva, k=200, temperature=0.1)["top1"])


def run_one(name: str, changes: dict, budget: float, costs: dict) -> dict:
    unknown = set(changes) - set(BASE)
    if unknown:
        raise SystemExit(f"unknown recipe keys {sorted(unknown)}; known: {sorted(BASE)}")
    recipe = dict(BASE, **changes)
    load0, t0 = load_average(), time.perf_counter()
    tr_x, tr_y, va_x, va_y = validation_split()
    encoder, stats = train(recipe, budget, costs, tr_x, log=lambda m: print(f"[{name}] {m}", file=sys.stderr,
                                                                           flush=True))
    knn = knn_val(encoder.eval(), tr_x, tr_y, va_x, va_y)
    return {"name": name, "budget": budget, "changes": changes, "recipe": recipe, "knn_val_top1": round(knn, 4),
            **stats, "wall_s": round(time.perf_counter() - t0, 1), "load1_start": load0, "load1_end": load_average(),
            "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
            "finished_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}


def table(log: Path) -> str:
    """The sweep log as a markdown table, grouped by budget, in the order the runs finished."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    lines = []
    for budget in sorted({r["budget"] for r in rows}):
        lines += [f"Budget {budget:g} modelled seconds:", "",
                  "| recipe | changes to the base | steps | epochs | steps at 16 / 24 / 32 px | kNN top-1 (val) | "
                  "wall s | load |", "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
        for r in (r for r in rows if r["budget"] == budget):
            per = r["steps_per_size"]
            sizes = " / ".join(str(per.get(k, 0)) for k in ("16", "24", "32"))
            changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "-"
            lines.append(f"| {r['name']} | {changes} | {r['steps']} | {r['epochs']} | {sizes} | "
                         f"{r['knn_val_top1']:.4f} | {r['wall_s']:.0f} | {r['load1_start']}-{r['load1_end']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=0.0, help="modelled seconds of training per recipe")
    parser.add_argument("--costs", default=str(HERE / "results" / "step_costs.json"),
                        help="JSON table of modelled step seconds (recipe_step_bench.py variant -> s/step)")
    parser.add_argument("--set", default="{}", help="one recipe: changes to the base, as JSON")
    parser.add_argument("--name", default="one")
    parser.add_argument("--grid", help="a JSON list of {name, set}: run each (own process) unless in the log")
    parser.add_argument("--log", default=str(HERE / "results" / "recipe_sweep.jsonl"), help="results, appended")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th grid entry from the i-th")
    parser.add_argument("--table", action="store_true", help="only print the log as a markdown table")
    args = parser.parse_args()
    if args.table:
        print(table(Path(args.log)))
        return
    if args.budget <= 0:
        raise SystemExit("--budget (modelled seconds of training, > 0) is needed to run recipes")
    costs = json.loads(Path(args.costs).read_text())
    if not args.grid:
        result = run_one(args.name, json.loads(args.set), args.budget, costs)
        print(json.dumps(result), flush=True)
        return
    log = Path(args.log)
    done = set()
    if log.is_file():
        done = {(r["name"], r["budget"]) for r in map(json.loads, log.read_text().splitlines()) if r}
    grid = json.loads(Path(args.grid).read_text())
    i, n = map(int, args.shard.split("/"))
    for entry in grid[i::n]:
        if (entry["name"], args.budget) in done:
            continue
        cmd = [sys.executable, __file__, "--budget", str(args.budget), "--costs", args.costs, "--name", entry["name"],
               "--set", json.dumps(entry["set"])]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            print(f"{entry['name']} failed (exit {proc.returncode})", flush=True)
            continue
        line = proc.stdout.strip().splitlines()[-1]
        with log.open("a") as f:
            f.write(line + "\n")
        r = json.loads(line)
        print(f"{r['name']:30s} kNN(val) {r['knn_val_top1']:.4f}  {r['steps']} steps {r['epochs']} epochs "
              f"{r['wall_s']} s wall, load {r['load1_start']}-{r['load1_end']}", flush=True)


if __name__ == "__main__":
    main()
