"""Accuracy per minute: contrastkit's recipe vs the lightly-based recipe at an equal training-time budget.

Both train the same encoder (CIFAR-stem ResNet-18, base width 16, channels_last) on the shared CIFAR-10 JPEGs
(train/) for the same wall-clock training budget, one after the other in separate processes, then are scored by the
same kNN protocol (k=200, cosine, exp(sim/0.1) votes, h, train/ memory, test/ queries, CIFAR-10 mean/std, fp32).

The peer recipe is issue 10's (see _pipelines.py). Its cosine schedule spans the steps that fit the budget (a
fractional number of epochs), estimated from a short calibration run, and it trains until the budget is spent.
contrastkit's recipe is RECIPES[--recipe] below (the schedule spans the budget in training seconds). Both report
their training seconds beside their accuracy.

    .venv/bin/python benchmarks/quality_bench.py --budget-s 780            # both, 13 minutes each
    .venv/bin/python benchmarks/quality_bench.py --budget-s 180 --which ours --recipe cifar-budget
    # three seeds of ours and one peer run; mean, minimum and spread of ours
    .venv/bin/python benchmarks/quality_bench.py --budget-s 780 --seeds 0,1,2 --json out.json
    # an accuracy-over-time curve: kNN every 5 minutes of training on both sides (not counted as training)
    .venv/bin/python benchmarks/quality_bench.py --budget-s 3600 --knn-every-s 300 --json c.json --plot c.png

``--knn-every-s`` records the curve inside the one training run of each side: contrastkit's kNN monitor
(``--knn-every-s``, the same protocol, fp32) and the same check in the peer's loop; neither evaluation counts as
training time. Prints progress, a table and, last, one JSON line (also written to ``--json``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
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
_SHOWN = ("batch_size", "lr", "temperature", "crop_scale", "color_strength", "warmup_epochs", "weight_decay",
          "optimizer", "lr_scaling", "precision", "size_schedule", "width", "proj_hidden_dim", "proj_dim")


def machine() -> dict:
    """The CPU, its cores and the load averages now: recorded beside every figure."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").is_file() else []
    return {"cpu": model, "cores": os.cpu_count(), "load_1_5_15": [float(x) for x in load],
            "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def data_label() -> str:
    """What every figure says of its data: the shared CIFAR-10 JPEGs, or the folder CONTRASTKIT_CIFAR10 names (a
    subset, for a quick check of the commands)."""
    folder = os.environ.get("CONTRASTKIT_CIFAR10")
    return "CIFAR-10 JPEGs from ../shared/data" + (f" (CONTRASTKIT_CIFAR10={folder})" if folder else "")


def train_images() -> int:
    """The number of training images (50,000 for CIFAR-10; fewer in a subset)."""
    from _pipelines import require_cifar

    return sum(1 for p in Path(require_cifar(), "train").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def run_ours(budget_s: float, recipe: dict, seed: int = 0, knn_every_s: float = 0.0) -> dict:
    from _pipelines import knn_cifar, require_cifar

    from contrastkit.config import PretrainConfig
    from contrastkit.models import load_checkpoint_model
    from contrastkit.train import pretrain

    with tempfile.TemporaryDirectory() as out:
        options = dict(method="simclr", encoder="resnet18", width=0.25, cifar_stem="on", proj_hidden_dim=512,
                       proj_dim=128, epochs=100, schedule="time", augment_on="device", num_workers=2,
                       channels_last="on", knn_every=0)
        options.update(recipe)
        options.update(data=require_cifar(), time_budget_s=budget_s, progress=False, log_every=50, out=out,
                       seed=seed, knn_every_s=knn_every_s)
        cfg = PretrainConfig(**options)
        summary = pretrain(cfg)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        model, _, _ = load_checkpoint_model(Path(out) / "last.pt")
    t0 = time.perf_counter()
    knn = knn_cifar(model.encoder)
    curve = [{"step": r["step"], "train_time_s": round(r["train_time_s"], 1), "knn_top1": r["knn_top1"]}
             for r in rows if r["kind"] == "knn"]
    return {"seed": seed, "knn_top1": knn, "train_time_s": summary["train_time_s"], "steps": summary["global_step"],
            "epochs_done": round(summary["global_step"] * cfg.batch_size / train_images(), 2),
            "images_per_s": summary["images_per_s"], "precision": summary["precision"],
            "knn_time_s": round(time.perf_counter() - t0, 1), "knn_curve": curve,
            "recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items() if k in _SHOWN}}


def run_peer(budget_s: float, calibration_steps: int = 12, batch_size: int = 256, seed: int = 0,
             knn_every_s: float = 0.0, log=print) -> dict:
    from _pipelines import knn_cifar, steps_for_budget, train_peer

    _, cal = train_peer(0, epochs=1, batch_size=batch_size, max_steps=calibration_steps, warmup_steps_excluded=2,
                        log=lambda *_: None, seed=seed)
    steps = steps_for_budget(cal["images_per_s"], budget_s, batch_size)
    log(f"peer: calibration {cal['images_per_s']} img/s -> cosine over {steps} steps "
        f"({steps * batch_size / train_images():.2f} epochs)")
    model, stats = train_peer(budget_s, epochs=0, batch_size=batch_size, total_steps=steps, log=log, seed=seed,
                              knn_every_s=knn_every_s)
    t0 = time.perf_counter()
    knn = knn_cifar(model.encoder)
    return {"seed": seed, "knn_top1": knn, **stats, "planned_steps": steps,
            "calibration_images_per_s": cal["images_per_s"], "knn_time_s": round(time.perf_counter() - t0, 1)}


def spread(values: list[float]) -> dict:
    """Mean, minimum, maximum and spread (max - min) of the seeds' accuracies."""
    return {"n": len(values), "mean": round(statistics.mean(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "spread": round(max(values) - min(values), 4)}


def plot_curves(results: dict, budget_s: float, path: Path) -> None:
    """kNN top-1 against training minutes for every run (its curve and final point), beside the published GPU
    figures in a panel of their own: GPU results, whose minutes are not comparable with these."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, gpu) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 1.2]})
    colours = {"ours": "tab:blue", "peer": "tab:orange"}
    names = {"ours": "contrastkit recipe", "peer": "lightly-based peer"}
    for side in ("ours", "peer"):
        for i, r in enumerate(results.get(side, [])):
            pts = [(p["train_time_s"] / 60, p["knn_top1"]) for p in r.get("knn_curve", [])]
            pts.append((r["train_time_s"] / 60, r["knn_top1"]))
            ax.plot(*zip(*pts), "o-", color=colours[side], alpha=1.0 if i == 0 else 0.5, ms=3,
                    label=f"{names[side]} (seed {r['seed']})")
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("kNN top-1, CIFAR-10 test (k=200)")
    longest = max([budget_s] + [r["train_time_s"] for side in ("ours", "peer") for r in results.get(side, [])])
    ax.set_xlim(0, longest / 60 * 1.02)
    ax.set_ylim(0.1, 0.9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"CIFAR-10 JPEGs, {budget_s:g} s training budget, {results['machine']['cpu']}, "
                 f"{results['machine']['cores']} cores", fontsize=9)
    published = [("dkobak\nA100", 20, 0.832), ("lightly\nA6000", 87, 0.848)]
    gpu.bar([p[0] for p in published], [p[2] for p in published], color="0.6")
    for i, (_, minutes, acc) in enumerate(published):
        gpu.text(i, acc - 0.1, f"{acc:.3f}\nin {minutes} min", ha="center", fontsize=8, color="white")
    gpu.set_ylim(0.1, 0.9)
    gpu.set_title("published GPU results\n(GPU minutes: not comparable)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def with_spreads(results: dict) -> dict:
    """``results`` with each side's mean / minimum / spread and, when both sides ran, ours' margin over the peer."""
    for which in ("ours", "peer"):
        if results.get(which):
            results[f"{which}_knn_top1"] = spread([r["knn_top1"] for r in results[which]])
    if results.get("ours") and results.get("peer"):
        results["difference"] = round(results["ours_knn_top1"]["mean"] - results["peer_knn_top1"]["mean"], 4)
        results["difference_min"] = round(results["ours_knn_top1"]["min"] - results["peer_knn_top1"]["max"], 4)
    return results


def write_new(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, which must not exist yet (a merge never replaces a saved result)."""
    if path.exists():
        raise SystemExit(f"{path} exists; --merge writes a new file only")
    path.write_text(text)


def merge_saved(saved: list[dict]) -> dict:
    """One result from several ``--json`` files of the same budget and recipe (seeds run in separate invocations):
    the runs side by side, each keeping its own machine and load, and the spreads over all of them.

    The recipe is contrastkit's, so it must match only among the files that hold contrastkit's runs: a file of peer
    runs alone (the peer's recipe is fixed, whatever ``--recipe`` said) merges with any of them at its budget."""
    budgets = {s["budget_s"] for s in saved}
    if len(budgets) != 1:
        raise SystemExit(f"--merge takes files of one budget; got {sorted(budgets)}")
    ours = [s for s in saved if s.get("ours")] or saved
    recipes = {(s["recipe"], s.get("recipe_json")) for s in ours}
    if len(recipes) != 1:
        raise SystemExit(f"--merge takes contrastkit runs of one recipe; got {sorted(map(str, recipes))}")
    merged = {k: ours[0][k] for k in ("budget_s", "recipe", "recipe_json", "machine", "data")}
    merged["merged_from"] = len(saved)
    for which in ("ours", "peer"):
        runs = [r for s in saved for r in s.get(which, [])]
        seeds = [r["seed"] for r in runs]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"--merge: {which} seed(s) {sorted(seeds)} appear more than once")
        if runs:
            merged[which] = sorted(runs, key=lambda r: r["seed"])
    return with_spreads(merged)


def _cell(value) -> str:
    """A table cell: "-" where a run did not record the figure."""
    return "-" if value is None else str(value)


def summary_markdown(saved: list[dict]) -> str:
    """Markdown for docs/results.md from saved ``--json`` files: each budget's runs with the machine and load, ours'
    mean / minimum / spread, the difference to the peer against issue 27's targets, and the kNN-over-time curve."""
    targets = {780.0: 0.58, 3600.0: 0.70}
    lines = []
    for res in saved:
        budget, m = res["budget_s"], res["machine"]
        started = (f"runs from {res['merged_from']} invocations" if res.get("merged_from")
                   else f"started {m['utc']} UTC, load {m['load_1_5_15']}")
        lines += [f"**{budget:g} s of training** (`--recipe {res['recipe']}`, {m['cpu']}, {m['cores']} cores, "
                  f"{started}; {res['data']}):", "",
                  "| run | seed | kNN top-1 | training s | steps | epochs | images/s | started (UTC) "
                  "| load before -> after |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for which in ("ours", "peer"):
            for r in res.get(which, []):
                lines.append(f"| {'contrastkit' if which == 'ours' else 'lightly-based peer'} | {r['seed']} | "
                             f"{r['knn_top1']:.4f} | {r['train_time_s']} | {_cell(r['steps'])} | "
                             f"{_cell(r['epochs_done'])} | "
                             f"{r['images_per_s']} | {r['machine_before']['utc']} | "
                             f"{r['machine_before']['load_1_5_15'][0]} -> "
                             f"{r['machine_after']['load_1_5_15'][0]} |")
        lines.append("")
        ours, peer = res.get("ours_knn_top1"), res.get("peer_knn_top1")
        if ours:
            lines.append(f"contrastkit: mean **{ours['mean']:.4f}**, minimum {ours['min']:.4f}, spread "
                         f"{ours['spread']:.4f} over {ours['n']} seed(s).")
        if ours and peer:
            want = targets.get(float(budget))
            verdict = "" if want is None else (
                f" Target (issue 27): >= {want} and >= +0.10: "
                f"{'met' if ours['mean'] >= want and res['difference'] >= 0.10 else 'NOT met'}"
                f" (minimum seed {ours['min']:.4f}, its margin over the peer {res['difference_min']:+.4f}).")
            lines.append(f"Peer: {peer['mean']:.4f}. Difference **{res['difference']:+.4f}**.{verdict}")
        curves = {w: r["knn_curve"] for w in ("ours", "peer") for r in res.get(w, [])[:1] if r.get("knn_curve")}
        if curves:
            lines += ["", "kNN over training time (first seed of each side; evaluation time not counted):", "",
                      "| side | training minutes: kNN top-1 |", "| --- | --- |"]
            for w, pts in curves.items():
                cells = ", ".join(f"{p['train_time_s'] / 60:.1f}: {p['knn_top1']:.4f}" for p in pts)
                lines.append(f"| {'contrastkit' if w == 'ours' else 'peer'} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def _child(which: str, seed: int, args: argparse.Namespace) -> dict:
    """One side, one seed, in its own process; its result with the machine before and after."""
    cmd = [sys.executable, __file__, "--one", which, "--one-seed", str(seed), "--budget-s", str(args.budget_s),
           "--recipe", args.recipe, "--knn-every-s", str(args.knn_every_s)]
    if args.recipe_json:
        cmd += ["--recipe-json", args.recipe_json]
    before, t0 = machine(), time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{which} (seed {seed}) failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(wall_s=round(time.perf_counter() - t0, 1), machine_before=before, machine_after=machine())
    print(f"{which} seed {seed}: kNN top-1 {result['knn_top1']:.4f} after {result['train_time_s']} s of training "
          f"({result.get('images_per_s')} img/s), load {before['load_1_5_15'][0]} -> "
          f"{result['machine_after']['load_1_5_15'][0]}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=780.0, help="training seconds for each run (13 min)")
    parser.add_argument("--which", default="ours,peer", help="ours, peer or both, in this order (comma-separated)")
    parser.add_argument("--recipe", default="cifar-budget-3", choices=sorted(RECIPES),
                        help="contrastkit recipe (default: the one the README runs)")
    parser.add_argument("--recipe-json", default=None, help="override recipe fields, e.g. '{\"lr\": 0.5}'")
    parser.add_argument("--seeds", default="0", help="seeds of contrastkit's runs (comma-separated)")
    parser.add_argument("--peer-seeds", default="0", help="seeds of the peer's runs (comma-separated)")
    parser.add_argument("--knn-every-s", type=float, default=0.0,
                        help="kNN every this many seconds of training on both sides (a curve; not training time)")
    parser.add_argument("--json", help="also write the final JSON here")
    parser.add_argument("--plot", help="a PNG of the kNN-over-time curves (with --knn-every-s)")
    parser.add_argument("--replot", help="only draw --plot from this saved --json file")
    parser.add_argument("--summarize", nargs="+",
                        help="only print markdown for docs/results.md from saved --json files")
    parser.add_argument("--merge", nargs="+",
                        help="only combine saved --json files of one budget (seeds run apart) into --json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--one-seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.summarize:
        print(summary_markdown([json.loads(Path(p).read_text()) for p in args.summarize]))
        return
    if args.merge:
        merged = merge_saved([json.loads(Path(p).read_text()) for p in args.merge])
        if not args.json:
            raise SystemExit("--merge needs --json, the file to write")
        write_new(Path(args.json), json.dumps(merged, indent=1) + "\n")
        return
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        plot_curves(saved, saved["budget_s"], Path(args.plot))
        return
    recipe = dict(RECIPES[args.recipe], **json.loads(args.recipe_json or "{}"))
    if args.one:
        result = (run_peer(args.budget_s, seed=args.one_seed, knn_every_s=args.knn_every_s) if args.one == "peer"
                  else run_ours(args.budget_s, recipe, seed=args.one_seed, knn_every_s=args.knn_every_s))
        print(json.dumps(result))
        return
    if "peer" in args.which.split(",") and importlib.util.find_spec("lightly") is None:
        raise SystemExit("the peer recipe needs lightly: pip install -e '.[bench]' (checked before any run, so "
                         "that no run's result is lost to it)")
    seeds = {"ours": [int(s) for s in args.seeds.split(",")], "peer": [int(s) for s in args.peer_seeds.split(",")]}
    results: dict = {"budget_s": args.budget_s, "recipe": args.recipe, "recipe_json": args.recipe_json,
                     "machine": machine(), "data": data_label()}
    failed = []  # a run that fails costs only itself: the others go on, and the JSON keeps every finished one
    for which in args.which.split(","):
        results[which] = []
        for seed in seeds[which]:
            try:
                results[which].append(_child(which, seed, args))
            except SystemExit as exc:
                print(exc, flush=True)
                failed.append({"side": which, "seed": seed, "error": str(exc), "machine_after": machine()})
    if failed:
        results["failed"] = failed
    print("\n| run | seed | kNN top-1 | training s | steps | epochs | images/s | load before -> after |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for which in ("ours", "peer"):
        for r in results.get(which, []):
            print(f"| {which} | {r['seed']} | {r['knn_top1']:.4f} | {r['train_time_s']} | {r['steps']} | "
                  f"{r['epochs_done']} | {r['images_per_s']} | {r['machine_before']['load_1_5_15'][0]} -> "
                  f"{r['machine_after']['load_1_5_15'][0]} |")
    with_spreads(results)
    if args.plot:
        plot_curves(results, args.budget_s, Path(args.plot))
    line = json.dumps(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(line)
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: " + "; ".join(f["error"] for f in failed))


if __name__ == "__main__":
    main()
