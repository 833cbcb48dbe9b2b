"""Cost of seeding one sample: torch.manual_seed against the default CPU generator alone.

contrastkit's per-image path seeds every sample (bit-exact mid-epoch resume). ``torch.manual_seed`` also seeds every
accelerator backend; the transforms only draw from the default CPU generator, whose seeding gives the same draws.

    .venv/bin/python benchmarks/seed_bench.py
"""
from __future__ import annotations

import json
import time

import torch


def per_call_us(fn, n: int = 2000) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    gen = torch.default_generator
    torch.manual_seed(0)
    a = torch.rand(4)
    gen.manual_seed(0)
    assert torch.equal(a, torch.rand(4)), "the default generator's seeding must give torch.manual_seed's draws"

    def forked(i):
        with torch.random.fork_rng(devices=[]):
            gen.manual_seed(i)

    results = {"torch.manual_seed": per_call_us(torch.manual_seed),
               "default_generator.manual_seed": per_call_us(gen.manual_seed),
               "fork_rng + default_generator.manual_seed": per_call_us(forked)}
    for name, us in results.items():
        print(f"{name:42s} {us:8.1f} us per sample")
    print(json.dumps({"us_per_call": results, "cuda_available": torch.cuda.is_available()}))


if __name__ == "__main__":
    main()
