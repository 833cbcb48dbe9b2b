"""The network's training step alone: memory format, precision and torch.compile, on this machine.

A CIFAR-stem ResNet-18 of base width 16 with the MLP head (the train_bench model), 512 views of 32 px (batch 256,
two views), forward + a stand-in loss + backward + SGD step, seconds per step after warm-up. Each variant runs in
its own process; ratios are against fp32 NCHW in the same run. ``--profile`` also prints the top operators of one
fp32 channels_last step (torch.profiler). ``--malloc on`` calls :func:`contrastkit.runtime.allocator.tune_malloc` first (what
``contrastkit pretrain`` does on CPUs), ``--malloc both`` runs every variant both ways; minor page faults per step
(``getrusage``) are reported beside the time. ``--rounds R`` repeats the whole list R times, interleaved, and reports
the median.

    .venv/bin/python benchmarks/step_bench.py --threads 1
    .venv/bin/python benchmarks/step_bench.py --threads 1 --variants fp32-nchw,fp32-cl,bf16-cl,bf16-cl-compile --profile
    .venv/bin/python benchmarks/step_bench.py --threads 2 --variants fp32-cl,bf16-cl --malloc both --rounds 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

VARIANTS = ("fp32-nchw", "fp32-cl", "fp32-cl-compile", "bf16-nchw", "bf16-cl", "bf16-cl-compile")


def step_time(variant: str, threads: int, steps: int, profile: bool = False, malloc: bool = False) -> dict:
    import resource

    import torch

    from contrastkit import build_model
    from contrastkit.runtime.allocator import malloc_state, tune_malloc

    if malloc and not tune_malloc():
        raise SystemExit(f"--malloc on: {malloc_state()}")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("resnet18", cifar_stem=True, width=0.25, proj_hidden_dim=512, proj_dim=128)
    x = torch.randn(512, 3, 32, 32)
    if "-cl" in variant:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant.endswith("compile"):
        model = torch.compile(model)
    bf16 = variant.startswith("bf16")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, z = model(x)
        loss = z.float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof

        with prof(activities=[ProfilerActivity.CPU]) as p:
            step()
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=8), file=sys.stderr)
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"s_per_step": seconds, "minflt_per_step": faults, "peak_rss_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--variants", default="fp32-nchw,fp32-cl,fp32-cl-compile,bf16-nchw,bf16-cl,bf16-cl-compile")
    parser.add_argument("--profile", action="store_true", help="print the top operators of an fp32-cl step")
    parser.add_argument("--malloc", choices=("off", "on", "both"), default="off",
                        help="tune glibc malloc first (contrastkit.runtime.allocator.tune_malloc), or run both ways")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the list, interleaved; report the median")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--one-malloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(step_time(args.one, args.threads, args.steps, args.profile, args.one_malloc)))
        return
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    mallocs = {"off": [False], "on": [True], "both": [False, True]}[args.malloc]
    runs: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for v in variants:
            for m in mallocs:
                name = v + ("+malloc" if m else "")
                cmd = [sys.executable, __file__, "--one", v, "--threads", str(args.threads), "--steps",
                       str(args.steps)]
                if m:
                    cmd.append("--one-malloc")
                profile = args.profile and v == "fp32-cl" and r == 0
                if profile:
                    cmd.append("--profile")
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    continue
                if profile:
                    print(proc.stderr[proc.stderr.find("---"):])
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.setdefault(name, []).append(res)
                print(f"round {r + 1} {name:25s} {res['s_per_step']:.3f} s/step "
                      f"{res['minflt_per_step']:10.0f} minor faults/step {res['peak_rss_mb']:7.0f} MB peak RSS",
                      flush=True)
    results = {name: {k: statistics.median(x[k] for x in rs) for k in ("s_per_step", "minflt_per_step", "peak_rss_mb")}
               for name, rs in runs.items()}
    base = results.get("fp32-nchw", {}).get("s_per_step")
    print("\n| variant | s/step (median) | minor faults/step | peak RSS MB | speed-up vs fp32-nchw | "
          "speed-up from malloc |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, res in results.items():
        t = res["s_per_step"]
        plain = results.get(name.removesuffix("+malloc"), {}).get("s_per_step") if name.endswith("+malloc") else None
        print(f"| {name} | {t:.3f} | {res['minflt_per_step']:.0f} | {res['peak_rss_mb']:.0f} | "
              f"{f'{base / t:.2f}' if base else '-'} | "
              f"{f'{plain / t:.2f}' if plain else '-'} |")
    print(json.dumps({"threads": args.threads, "rounds": args.rounds, "results": results}))


if __name__ == "__main__":
    main()
