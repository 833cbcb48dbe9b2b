"""The network's training step alone: memory format, precision and torch.compile, on this machine.

A CIFAR-stem ResNet-18 of base width 16 with the MLP head (the train_bench model), 512 views of 32 px (batch 256,
two views), forward + a stand-in loss + backward + SGD step, seconds per step after warm-up. Each variant runs in
its own process; ratios are against fp32 NCHW in the same run. ``--profile`` also prints the top operators of one
fp32 channels_last step (torch.profiler).

    .venv/bin/python benchmarks/step_bench.py --threads 1
    .venv/bin/python benchmarks/step_bench.py --threads 1 --variants fp32-nchw,fp32-cl,bf16-cl,bf16-cl-compile --profile
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

VARIANTS = ("fp32-nchw", "fp32-cl", "fp32-cl-compile", "bf16-nchw", "bf16-cl", "bf16-cl-compile")


def step_time(variant: str, threads: int, steps: int, profile: bool = False) -> float:
    import torch

    from contrastkit import build_model

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
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--variants", default="fp32-nchw,fp32-cl,fp32-cl-compile,bf16-nchw,bf16-cl,bf16-cl-compile")
    parser.add_argument("--profile", action="store_true", help="print the top operators of an fp32-cl step")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps({"s_per_step": step_time(args.one, args.threads, args.steps, args.profile)}))
        return
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    results = {}
    for v in variants:
        cmd = [sys.executable, __file__, "--one", v, "--threads", str(args.threads), "--steps", str(args.steps)]
        if args.profile and v == "fp32-cl":
            cmd.append("--profile")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            continue
        if args.profile and v == "fp32-cl":
            print(proc.stderr[proc.stderr.find("---"):])
        results[v] = json.loads(proc.stdout.strip().splitlines()[-1])["s_per_step"]
        print(f"{v:18s} {results[v]:.3f} s/step", flush=True)
    base = results.get("fp32-nchw")
    print("\n| variant | s/step | speed-up vs fp32-nchw |\n| --- | ---: | ---: |")
    for v, t in results.items():
        print(f"| {v} | {t:.3f} | {base / t:.2f} |" if base else f"| {v} | {t:.3f} | - |")
    print(json.dumps({"threads": args.threads, "s_per_step": results}))


if __name__ == "__main__":
    main()
