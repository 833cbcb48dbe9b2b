"""What ``--precision auto`` chooses on a CPU (issue 27): bf16 where the CPU multiplies bf16 in hardware and
oneDNN and ATen may use it, fp32 otherwise (the emulated AVX2 setting included)."""
from __future__ import annotations

import pytest
import torch

from contrastkit.train import precision
from contrastkit.train.precision import cpu_has_fast_bf16, resolve_precision

CPU = torch.device("cpu")


@pytest.fixture
def native_bf16(monkeypatch):
    """A CPU with AVX512-BF16 whose oneDNN and ATen run at full width; the cache is cleared around each test."""
    precision.cpu_has_fast_bf16.cache_clear()
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    yield monkeypatch
    precision.cpu_has_fast_bf16.cache_clear()


def test_native_bf16_gives_bf16(native_bf16):
    assert cpu_has_fast_bf16() and resolve_precision(CPU, "auto") == "bf16"
    assert resolve_precision(CPU, "fp32") == "fp32"  # an explicit choice stays


@pytest.mark.parametrize("var, value", [("ONEDNN_MAX_CPU_ISA", "AVX2"), ("ONEDNN_MAX_CPU_ISA", "avx512_core"),
                                        ("DNNL_MAX_CPU_ISA", "AVX512_CORE_VNNI")])
def test_a_onednn_limit_below_bf16_gives_fp32(native_bf16, var, value):
    native_bf16.setenv(var, value)
    assert not cpu_has_fast_bf16() and resolve_precision(CPU, "auto") == "fp32"


def test_a_onednn_limit_at_bf16_or_above_keeps_bf16(native_bf16):
    native_bf16.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert cpu_has_fast_bf16()


def test_no_bf16_instructions_gives_fp32(native_bf16):
    native_bf16.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f", "avx512bw"})
    assert resolve_precision(CPU, "auto") == "fp32"


def test_aten_default_capability_gives_fp32(native_bf16):
    native_bf16.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert resolve_precision(CPU, "auto") == "fp32"


def test_onednn_without_bf16_gives_fp32(native_bf16):
    native_bf16.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_precision(CPU, "auto") == "fp32"


def test_this_machine_is_consistent():
    """Whatever this CPU and its settings: auto is bf16 exactly when the check says the CPU has fast bf16."""
    precision.cpu_has_fast_bf16.cache_clear()
    want = "bf16" if cpu_has_fast_bf16() else "fp32"
    assert resolve_precision(CPU, "auto") == want
    assert resolve_precision(torch.device("meta"), "auto") == "fp32"
