"""Gradient caching: peak memory and time of one training step, with and without micro-batches.

One SimCLR training step (NT-Xent, temperature 0.5, 2 views) of a CIFAR-stem ResNet-18 (``--width`` 0.25
gives 16-32-64-128 channels) with the default MLP head, on random 32x32 views of a batch of ``--batch-size``
images (default 1024, so 2048 forward passes), followed by an SGD step:

* ``full``: the plain full-batch forward/backward of the training step (``contrastkit.train.forward.forward_views``)
  (views reshaped view-major, one forward, the loss, ``loss.backward()``);
* ``cached``: ``contrastkit.train.gradcache.cached_backward(model, objective, views, labels, micro)``
  with micro-batches of ``--micro`` images (each with both views), the path
  ``contrastkit pretrain --micro-batch-size`` takes.

Each configuration runs in a fresh subprocess (one after the other, never two at once), so its RSS
high-water mark (``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to it alone. The subprocess also reports
its RSS just before the first step (model, optimiser and views allocated), so "step memory" = peak -
that baseline is what the step itself adds. Time: ``--warmup`` untimed steps, then the median of
``--repeats`` timed steps (wall clock). Prints a markdown table and, last, one JSON line.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gradcache_bench.py --width 0.25 --batch-size 1024 --micro 128

With batch norm (the ResNet has it), the cached step normalises each micro-batch with its own statistics,
so its gradient is that of per-micro-batch BN, not of full-batch BN (see ``contrastkit.train.gradcache``);
memory and time are what this benchmark measures, exactness is tested in ``tests/test_gradcache.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def _rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_one(mode: str, width: float, batch: int, micro: int, warmup: int, repeats: int, seed: int) -> dict:
    import torch

    from contrastkit import build_model
    from contrastkit.config import PretrainConfig
    from contrastkit.train.gradcache import cached_backward
    from contrastkit.methods.simclr import simclr_objective
    from contrastkit.train.forward import forward_views

    torch.manual_seed(seed)
    model = build_model("resnet18", cifar_stem=True, width=width)
    model.train()
    objective = simclr_objective(PretrainConfig(method="simclr", temperature=0.5, n_views=2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    views = torch.randn(batch, 2, 3, 32, 32)  # (N, V, C, H, W)
    labels = None

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        if mode == "cached":
            loss = cached_backward(model, objective, views, labels, micro)
        else:  # the plain path of the training step (train/trainer.py train_one_epoch)
            loss = objective(forward_views(model, views), labels)  # outputs (N, V, D)
            loss.backward()
        optimizer.step()
        return float(loss)

    # Baseline: model, views and an optimiser without state yet (gradients and momentum buffers are
    # allocated by the first step and count towards the peak; they are the same in both modes).
    baseline = _rss_now_mb()
    times, losses = [], []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        losses.append(step())
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = _peak_rss_mb()
    n_params = sum(p.numel() for p in model.parameters())
    return {"mode": mode, "micro": micro if mode == "cached" else None, "batch": batch, "width": width,
            "baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(peak, 1),
            "step_mem_mb": round(peak - baseline, 1), "step_s": round(statistics.median(times), 3),
            "step_times_s": [round(t, 3) for t in times], "loss_first": round(losses[0], 5),
            "threads": torch.get_num_threads(), "params": n_params, "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=0.25, help="ResNet-18 width multiplier (0.25 or 0.5)")
    parser.add_argument("--batch-size", type=int, default=1024, help="images per step (each gives 2 views)")
    parser.add_argument("--micro", default="128", help="micro-batch sizes of the cached runs, comma-separated")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps (the median is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", nargs=2, metavar=("MODE", "MICRO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        mode, micro = args.one[0], int(args.one[1])
        print(json.dumps(run_one(mode, args.width, args.batch_size, micro, args.warmup, args.repeats, args.seed)))
        return

    configs = [("full", 0)] + [("cached", int(m)) for m in args.micro.split(",") if m]
    for _, m in configs:
        if m and args.batch_size % m:
            raise SystemExit(f"--micro {m} must divide --batch-size {args.batch_size}")
    results = []
    for mode, micro in configs:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", mode, str(micro), "--width", str(args.width),
               "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--repeats", str(args.repeats),
               "--seed", str(args.seed)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"{mode} (micro {micro}) failed with exit code {proc.returncode}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["process_wall_s"] = round(time.perf_counter() - t0, 1)
        results.append(res)
        print(f"  {mode:6s} micro={micro or '-':>4}: peak {res['peak_rss_mb']:.0f} MB, step {res['step_s']:.2f} s",
              file=sys.stderr, flush=True)

    full = results[0]
    print(f"\nCIFAR-stem ResNet-18 width {args.width}, batch {args.batch_size} x 2 views (32x32), SimCLR NT-Xent, "
          f"SGD; {full['threads']} torch thread(s), torch {full['torch']}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs visible\n")
    print("| step | micro-batch | peak RSS (MB) | RSS before the step (MB) | step memory (MB) | step memory vs full "
          "| step time (s) | time vs full |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        name = "full batch" if r["mode"] == "full" else "gradient cache"
        print(f"| {name} | {r['micro'] or '-'} | {r['peak_rss_mb']:.0f} | {r['baseline_rss_mb']:.0f} | "
              f"{r['step_mem_mb']:.0f} | {r['step_mem_mb'] / full['step_mem_mb']:.2f}x | {r['step_s']:.2f} | "
              f"{r['step_s'] / full['step_s']:.2f}x |")
    summary = {"bench": "gradcache", "width": args.width, "batch": args.batch_size, "views": 2,
               "threads": full["threads"], "results": results,
               "peak_ratio": {str(r["micro"]): round(r["peak_rss_mb"] / full["peak_rss_mb"], 3)
                              for r in results[1:]},
               "step_mem_ratio": {str(r["micro"]): round(r["step_mem_mb"] / full["step_mem_mb"], 3)
                                  for r in results[1:]},
               "time_ratio": {str(r["micro"]): round(r["step_s"] / full["step_s"], 3) for r in results[1:]}}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
