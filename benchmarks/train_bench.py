"""End-to-end pretraining throughput (data to optimiser step): contrastkit vs a lightly-based pipeline.

Same encoder (CIFAR-stem ResNet-18, base width 16), head, batch, optimiser (SGD 0.06, momentum 0.9, wd 5e-4) and
loader workers, on the shared CIFAR-10 JPEGs. Each pipeline runs in its own process, one after the other; images/s
is measured after the first --warmup steps. Prints a table and, last, one JSON line with the ratios.

    .venv/bin/python benchmarks/train_bench.py --steps 40 --warmup 5
    .venv/bin/python benchmarks/train_bench.py --pipelines lightly,lightly+bf16,contrastkit-device,\
        contrastkit-device+compile,contrastkit-device+bf16,contrastkit-device+bf16+compile

    # the issue-8 GPU figure: CIFAR-10 epoch time, CIFAR-stem ResNet-18 (full width), batch 512, two epochs each
    .venv/bin/python benchmarks/train_bench.py --device cuda --width 1 --batch-size 512 --epochs 2 --workers 8 \
        --pipelines lightly,lightly+bf16,contrastkit-device,contrastkit-device+bf16

A ``+bf16`` row runs the forward under ``torch.autocast(bfloat16)`` (contrastkit: ``--precision bf16``; the lightly
row gets the same autocast around its forward, which lightly itself does not do), ``+compile`` is contrastkit's
``--compile``. contrastkit tunes glibc malloc on CPUs by default (``--malloc auto``, :mod:`contrastkit.runtime.allocator`):
``+nomalloc`` turns that off (``--malloc off``), and ``lightly+malloc`` gives the peer the same tuning (a like-for-like
row; lightly does not do it itself). Each ratio is against the plain fp32 ``lightly`` row when it ran; with
``--epochs`` the table also compares the last epoch's wall time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


PIPELINES = ("lightly", "contrastkit-workers", "contrastkit-device")
OPTIONS = ("bf16", "compile", "malloc", "nomalloc")
_ONLY = {"compile": "contrastkit", "nomalloc": "contrastkit", "malloc": "lightly"}


def parse_pipeline(spec: str) -> tuple[str, set[str]]:
    """``contrastkit-device+bf16+compile`` -> ("contrastkit-device", {"bf16", "compile"})."""
    name, *opts = spec.split("+")
    if name not in PIPELINES or not set(opts) <= set(OPTIONS) or any(
            not name.startswith(_ONLY[o]) for o in opts if o in _ONLY):
        raise SystemExit(f"unknown pipeline {spec!r}: expected one of {', '.join(PIPELINES)}, optionally followed by "
                         f"+bf16, (contrastkit only) +compile or +nomalloc, (lightly only) +malloc")
    return name, set(opts)


def run_one(which: str, steps: int, warmup: int, batch: int, workers: int, compile_: bool, device: str = "cpu",
            width: float = 0.25, epochs: int = 0) -> dict:
    """One pipeline; ``epochs`` > 0 trains that many whole epochs (``steps`` ignored) and reports their times."""
    from _pipelines import require_cifar, train_peer

    which, opts = parse_pipeline(which)
    compile_ = compile_ or "compile" in opts
    max_steps = 0 if epochs else warmup + steps
    if which == "lightly":
        if "malloc" in opts:
            from contrastkit.runtime.allocator import tune_malloc

            tune_malloc()
        _, stats = train_peer(0, epochs=max(epochs, 1), batch_size=batch, workers=workers, max_steps=max_steps,
                              warmup_steps_excluded=warmup, log=lambda *_: None, bf16="bf16" in opts,
                              device=device, width=width)
        return {"images_per_s": stats["images_per_s"], "steps": stats["steps"],
                "epoch_times_s": stats["epoch_times_s"]}
    from contrastkit.config import PretrainConfig
    from contrastkit.train import pretrain

    augment_on = "device" if which == "contrastkit-device" else "workers"
    with tempfile.TemporaryDirectory() as out:
        cfg = PretrainConfig(method="simclr", data=require_cifar(), encoder="resnet18", width=width, cifar_stem="on",
                             proj_hidden_dim=512, batch_size=batch, epochs=max(epochs, 1), lr=0.06, temperature=0.5,
                             num_workers=workers, augment_on=augment_on,  # device path: workers decode only
                             channels_last="on", knn_every=0, max_steps=max_steps, progress=False, out=out,
                             log_every=1000, compile=compile_, device=device,
                             precision="bf16" if "bf16" in opts else "fp32",
                             malloc="off" if "nomalloc" in opts else "auto")
        summary = pretrain(cfg)
        rows = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
    epoch_times = [round(r["epoch_time_s"], 2) for r in rows if r["kind"] == "epoch"] if epochs else []
    return {"images_per_s": summary["images_per_s_steady"], "steps": summary["global_step"],
            "epoch_times_s": epoch_times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="measured steps per pipeline")
    parser.add_argument("--warmup", type=int, default=5, help="steps excluded from the measurement")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pipelines", default="lightly,contrastkit-workers,contrastkit-device",
                        help="comma-separated; each one of " + ", ".join(PIPELINES) + ", optionally with +bf16 "
                             "(autocast to bfloat16; fast on CPUs with AMX) and, for contrastkit, +compile")
    parser.add_argument("--compile", action="store_true", help="torch.compile contrastkit's model in every row")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both pipelines)")
    parser.add_argument("--width", type=float, default=0.25, help="ResNet-18 base width factor (1.0: 64 channels)")
    parser.add_argument("--epochs", type=int, default=0,
                        help="train this many whole epochs per pipeline and report each epoch's wall time "
                             "(the last is the steady one); 0: --steps steps")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.warmup, args.batch_size, args.workers, args.compile,
                                 args.device, args.width, args.epochs)))
        return
    results = {}
    for which in args.pipelines.split(","):
        parse_pipeline(which)
        cmd = [sys.executable, __file__, "--one", which, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--device", args.device,
               "--width", str(args.width), "--epochs", str(args.epochs)]
        if args.compile:
            cmd.append("--compile")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            results[which] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
            continue
        results[which] = json.loads(proc.stdout.strip().splitlines()[-1])
        ips = results[which]["images_per_s"]
        if ips is None and not args.epochs:  # contrastkit's summary counts images/s after its first 5 steps
            results[which] = {"error": f"too few steps for a steady images/s: {results[which]}"}
            continue
        print(f"{which:34s} {ips or float('nan'):8.1f} images/s ({results[which]['steps']} steps) "
              f"epoch times {results[which]['epoch_times_s']}", flush=True)
    base = results.get("lightly", {}).get("images_per_s")
    ratios = {k: round(v["images_per_s"] / base, 2) for k, v in results.items()
              if base and v.get("images_per_s") and k != "lightly"}
    base_epoch = (results.get("lightly", {}).get("epoch_times_s") or [None])[-1]
    epoch_ratios = {k: round(base_epoch / v["epoch_times_s"][-1], 2) for k, v in results.items()
                    if base_epoch and v.get("epoch_times_s") and k != "lightly"}
    print("\n| pipeline | images/s | ratio to lightly | last epoch s | epoch speed-up vs lightly |\n"
          "| --- | --- | --- | --- | --- |")
    for k, v in results.items():
        last = (v.get("epoch_times_s") or ["-"])[-1]
        print(f"| {k} | {v.get('images_per_s', v.get('error'))} | {ratios.get(k, '1.00' if k == 'lightly' else '-')} "
              f"| {last} | {epoch_ratios.get(k, '1.00' if k == 'lightly' and base_epoch else '-')} |")
    print(json.dumps({"batch_size": args.batch_size, "workers": args.workers, "device": args.device,
                      "width": args.width, "epochs": args.epochs, "results": results,
                      "ratio_to_lightly": ratios, "epoch_speedup_vs_lightly": epoch_ratios}))


if __name__ == "__main__":
    main()
