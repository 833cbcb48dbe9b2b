"""Where oneDNN's channels_last weight gradient of a strided 1x1 convolution fails on this CPU.

Each case runs in a fresh process (a failure can crash the process or hang it) and compares the channels_last
weight gradient of ``conv2d(x, w, stride=2)``, ``w`` of shape (2C, C, 1, 1), with a float64 NCHW one. It prints
one row per (instruction set, channels): how many of the sizes gave the right gradient, a wrong one, a crash, or
a hang (no answer within 60 s, where a right one takes a few seconds: run it on an idle machine).
``contrastkit.train.memory_format`` keeps such convolutions out of channels_last on a CPU below
``FEWEST_SAFE_CHANNELS``; this script is the evidence for that number.

    python benchmarks/onednn_strided_1x1.py [--channels 4 8 12 16 32]
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

CASE = """
import sys, torch
from contrastkit.train.memory_format import strided_1x1_gradient_error
cin, n, size, threads = map(int, sys.argv[1:])
torch.set_num_threads(threads)
print("right" if strided_1x1_gradient_error(cin, n, size) < 1e-4 else "wrong")
"""
SIZES = [(n, s, t) for n in (2, 12) for s in (32, 64, 128) for t in (1, 2)]
ISAS = {"native": {}, "AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "default"}}


def outcome(channels: int, n: int, size: int, threads: int, env: dict[str, str]) -> str:
    try:
        proc = subprocess.run([sys.executable, "-c", CASE, str(channels), str(n), str(size), str(threads)],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "hang"
    words = proc.stdout.split()
    return words[-1] if proc.returncode == 0 and words else "crash"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[4, 8, 12, 16, 32])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{len(SIZES)} cases per row (batch 2/12, 32/64/128 px, 1/2 threads), two at a time")
    print("| instruction set | input channels | right | wrong | crash | hang |")
    print("|---|---|---|---|---|---|")
    for isa, env in ISAS.items():
        for c in args.channels:
            with ThreadPoolExecutor(2) as pool:
                seen = list(pool.map(lambda case: outcome(c, *case, env), SIZES))
            counts = [seen.count(k) for k in ("right", "wrong", "crash", "hang")]
            print(f"| {isa} | {c} | " + " | ".join(map(str, counts)) + " |", flush=True)


if __name__ == "__main__":
    main()
