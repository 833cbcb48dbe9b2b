"""contrastkit.runtime.allocator: glibc malloc tuning keeps freed activations in the process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from contrastkit.runtime import allocator

_PROBE = textwrap.dedent("""
    import json, resource, sys
    import torch
    import contrastkit.train  # what a training process has loaded when it tunes (the heap's neighbours with it)
    from contrastkit.runtime.allocator import malloc_state, tune_malloc
    tuned = tune_malloc() if sys.argv[1] == "on" else False
    torch.empty(1)  # load torch's kernels before counting
    faults = []
    for _ in range(10):  # a training step's pattern: allocate a 64 MiB activation, write it, free it
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.empty(16 * 2**20)
        x.fill_(1.0)
        del x
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"tuned": tuned, "state": malloc_state(), "faults": sorted(faults)}))
""")


def _probe(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    proc = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_tuned_malloc_reuses_freed_blocks_instead_of_faulting_them_back():
    plain, tuned = _probe("off"), _probe("on")
    assert tuned["tuned"] and tuned["state"].startswith("tuned")
    assert plain["state"].startswith("not-tuned")
    # 64 MiB is above glibc's largest dynamic mmap threshold: untuned, each of the 10 allocations is a fresh
    # mmap whose 16384 pages all fault; tuned, the first allocation's pages do and later ones reuse them. Medians
    # over the 10 allocations, since the kernel may reclaim some retained pages now and then (DAMON runs here).
    median = 5
    assert plain["faults"][median] >= 0.9 * 16384
    assert tuned["faults"][median] < 0.1 * 16384


@pytest.mark.parametrize("var, value", [("MALLOC_MMAP_THRESHOLD_", "65536"), ("LD_PRELOAD", "/usr/lib/libjemalloc.so.2"),
                                        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1")])
def test_a_users_own_allocator_choice_is_left_alone(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    assert allocator.tune_malloc() is False
    assert allocator.malloc_state().startswith("not-tuned") and var in allocator.malloc_state()


def test_unrelated_glibc_tunables_do_not_count_as_a_choice(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")
    for var in ("LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                "MALLOC_ARENA_MAX"):
        monkeypatch.delenv(var, raising=False)
    assert allocator._user_choice() is None


@pytest.mark.parametrize("bad", [0, 1000, 1 << 31, 2.5e8, True, "1G"])
def test_bad_threshold_is_refused_with_what_was_received(bad):
    with pytest.raises(ValueError, match="threshold must be an int of bytes"):
        allocator.tune_malloc(bad)


def test_the_option_tunes_only_cpu_runs_and_checks_its_value(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "tune_malloc", lambda: calls.append(1) or True)
    assert allocator.tune_malloc_for(torch.device("cuda"), "auto") is False
    assert allocator.tune_malloc_for(torch.device("cpu"), "off") is False
    assert calls == []
    assert allocator.tune_malloc_for(torch.device("cpu"), "auto") is True and calls == [1]
    with pytest.raises(ValueError, match="malloc must be auto or off, got 'on'"):
        allocator.tune_malloc_for(torch.device("cpu"), "on")
