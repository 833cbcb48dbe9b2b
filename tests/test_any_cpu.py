"""The suite holds on any x86-64 CPU, not only on one with AVX-512 and AMX.

oneDNN and ATen pick their kernels by the CPU's instruction set, and kernels of different instruction sets round
differently (an fp16 product flushed to zero on one is a subnormal on another). A test that asserts a number one
instruction set happens to give fails on the next machine. This test reruns, in a subprocess emulating a CPU with
AVX2 only (``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=default``), the tests whose results depend on the
kernels' rounding (fp16 loss scaling, the losses under bf16 autocast, a short fp16 training run through the CLI) and
a run whose narrow student would meet oneDNN's broken channels_last kernel under AVX2.
The whole suite passes under the same settings (``make test-avx2``).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EMULATION = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}
TESTS = Path(__file__).parent
ISA_SENSITIVE = [
    "train/test_fp16.py::test_loss_scaling_keeps_the_gradients_that_fp16_loses",
    "train/test_fp16.py::test_gradient_caching_scales_too",
    "train/test_fp16.py::test_fp16_run_checkpoints_and_resumes_its_loss_scale[lars]",
    "losses/test_autocast.py::test_the_loss_is_fp32_under_bf16_autocast[supcon-in]",
    "losses/test_autocast.py::test_the_loss_is_fp32_under_bf16_autocast[ntxent-small-tau]",
    # a 4-channel strided shortcut: oneDNN's AVX2 channels_last weight gradient for it hangs (train/memory_format.py)
    "cli/test_distill_cli.py::test_distill_with_labelled_loss_and_a_smaller_student",
]

_PROBE = """
import sys, torch, pytest
capability = torch.backends.cpu.get_cpu_capability()
if capability != "DEFAULT":
    sys.exit(f"the emulation did not take: ATen uses {capability}")
sys.exit(pytest.main(["-o", "addopts=", "--import-mode=importlib", "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_isa_sensitive_tests_pass_on_an_avx2_only_cpu():
    env = {**os.environ, **EMULATION}
    src = str(TESTS.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else src
    proc = subprocess.run([sys.executable, "-c", _PROBE, *(str(TESTS / t) for t in ISA_SENSITIVE)],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(ISA_SENSITIVE)} passed" in proc.stdout, proc.stdout[-4000:]
