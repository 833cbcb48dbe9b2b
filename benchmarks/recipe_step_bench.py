"""Throughput levers of a budget recipe's training step, A/B interleaved on this machine.

One step of the ``cifar-budget`` kind of recipe, whole: gather a batch of uint8 32-px images, two views from
``BatchAugment`` (crop scale 0.2-1, colour strength 0.5) at the view size under test, the CIFAR-stem ResNet-18 +
MLP head in channels_last, NT-Xent (the tiled kernel), backward, fused SGD with weight decay; glibc malloc tuned as
``contrastkit pretrain`` does on CPUs. A variant is a comma-free ``key=value`` list joined by ``/``, e.g.
``prec=bf16/compile=1/size=16``; keys (defaults): ``prec`` (fp32), ``compile`` (0), ``size`` (32), ``width``
(0.25), ``batch`` (64), ``cl`` (channels_last, 1), ``malloc`` (1), ``encoder`` (resnet18).

Each variant runs in its own process; ``--rounds`` repeats the whole list, interleaved (the order alternates), so
load from other jobs falls on every variant alike; the median over rounds is reported with the ratio to the first
variant. The first step of a process (and, with compile, its compilation) is timed apart as ``first_s``: what a
time budget pays once per view size. Every figure line carries the 1-minute load average (``/proc/loadavg``)
read when the variant ended. Beside the wall time per step it reports the process's CPU time per step
(``time.process_time``): with one thread (``--threads 1``) that is the step's own work, which other jobs on the
machine change much less than its wall time, so it is the figure to compare on a loaded machine
(``recipe_sweep.py`` models time with it).

    .venv/bin/python benchmarks/recipe_step_bench.py --variants prec=fp32,prec=bf16 --rounds 3
    .venv/bin/python benchmarks/recipe_step_bench.py --variants size=32,size=24,size=16 --steps 30
    ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/recipe_step_bench.py --variants prec=fp32,prec=bf16

Prints one line per run, a table of medians and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULTS = {"prec": "fp32", "compile": "0", "size": "32", "width": "0.25", "batch": "64", "cl": "1", "malloc": "1",
            "encoder": "resnet18"}


def parse_variant(spec: str) -> dict[str, str]:
    """``prec=bf16/size=16`` -> the full setting, defaults filled in."""
    out = dict(DEFAULTS)
    for part in filter(None, spec.split("/")):
        key, _, value = part.partition("=")
        if key not in DEFAULTS or not value:
            raise SystemExit(f"bad variant {spec!r}: expected key=value parts joined by '/', keys {sorted(DEFAULTS)}")
        out[key] = value
    return out


def load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run_variant(spec: str, steps: int, warmup: int, threads: int) -> dict:
    """Time one variant in this process: the first step apart, then ``warmup`` untimed and ``steps`` timed steps."""
    import torch

    from contrastkit import build_model
    from contrastkit.augment import BatchAugment
    from contrastkit.losses import NTXentLoss
    from contrastkit.runtime import tune_malloc
    from contrastkit.train.optim import build_optimizer

    v = parse_variant(spec)
    if v["malloc"] == "1":
        tune_malloc()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch, size = int(v["batch"]), int(v["size"])
    images = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8)  # (N, 3, 32, 32)
    augment = BatchAugment.from_preset("cifar", n_views=2, size=size, crop_scale=(0.2, 1.0), color_strength=0.5)
    model = build_model(v["encoder"], cifar_stem=True, width=float(v["width"]), proj_hidden_dim=512, proj_dim=128)
    cl = v["cl"] == "1"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    train_model = torch.compile(model) if v["compile"] == "1" else model
    criterion = NTXentLoss(temperature=0.2, check_values=False, even_batches=True)
    optimizer = build_optimizer(model, "sgd", 0.15, 0.9, 5e-4)
    dtype = torch.bfloat16 if v["prec"] == "bf16" else None
    gen = torch.Generator().manual_seed(0)

    aug_cpu = [0.0]

    def step() -> None:
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        c = time.process_time()
        with torch.no_grad():
            x = torch.cat(augment(images[idx], generator=gen))  # (2B, 3, S, S), view-major
        aug_cpu[0] += time.process_time() - c
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            _, z = train_model(x)  # (2B, D)
        z = z.float().view(2, batch, -1)  # (2, B, D)
        loss = criterion(z[0], z[1])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    t0, c0 = time.perf_counter(), time.process_time()
    aug_cpu[0] = 0.0
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    cpu = (time.process_time() - c0) / steps
    return {"s_per_step": seconds, "images_per_s": batch / seconds, "cpu_s_per_step": cpu,
            "augment_cpu_share": aug_cpu[0] / steps / cpu, "first_s": first, "load1": load_average()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="prec=fp32,prec=bf16", help="comma-separated variants (see above)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    parser.add_argument("--rounds", type=int, default=3, help="repeat the list, interleaved; report the median")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--write-costs", help="merge the median CPU s/step of each variant into this JSON table "
                                              "(recipe_sweep.py --costs)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_variant(args.one, args.steps, args.warmup, args.threads)))
        return
    variants = args.variants.split(",")
    for spec in variants:
        parse_variant(spec)
    runs: dict[str, list[dict]] = {s: [] for s in variants}
    for r in range(args.rounds):
        for spec in (variants if r % 2 == 0 else variants[::-1]):
            cmd = [sys.executable, __file__, "--one", spec, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if proc.returncode != 0:
                raise SystemExit(f"{spec} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[spec].append(res)
            print(f"round {r + 1} {spec:40s} {res['s_per_step']:.4f} s/step {res['images_per_s']:7.1f} img/s "
                  f"CPU {res['cpu_s_per_step']:.4f} s/step first step {res['first_s']:6.1f} s  load {res['load1']:.2f}",
                  flush=True)
    keys = ("s_per_step", "images_per_s", "cpu_s_per_step", "augment_cpu_share", "first_s", "load1")
    med = {s: {k: statistics.median(x[k] for x in rs) for k in keys} for s, rs in runs.items()}
    base, base_cpu = med[variants[0]]["s_per_step"], med[variants[0]]["cpu_s_per_step"]
    print(f"\n| variant | s/step (median) | images/s | speed-up vs {variants[0]} | CPU s/step | CPU speed-up | "
          "augmentation's CPU share | first step s | load |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s, m in med.items():
        print(f"| {s} | {m['s_per_step']:.4f} | {m['images_per_s']:.1f} | {base / m['s_per_step']:.2f} | "
              f"{m['cpu_s_per_step']:.4f} | {base_cpu / m['cpu_s_per_step']:.2f} | {m['augment_cpu_share']:.2f} | "
              f"{m['first_s']:.1f} | {m['load1']:.2f} |")
    if args.write_costs:
        path = Path(args.write_costs)
        table = json.loads(path.read_text()) if path.is_file() else {}
        table.update({s: round(m["cpu_s_per_step"], 5) for s, m in med.items()})
        path.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    print(json.dumps({"rounds": args.rounds, "steps": args.steps, "threads": args.threads,
                      "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "ONEDNN_MAX_CPU_ISA",
                                                         "ATEN_CPU_CAPABILITY") if k in os.environ},
                      "median": med, "runs": runs}))


if __name__ == "__main__":
    main()
