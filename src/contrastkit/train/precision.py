"""Numeric precision of a training step: what ``--precision`` means on a device, autocast, the fp16 loss scaler.

The forward pass runs under autocast (bf16 or fp16) when asked; the loss always takes float32 embeddings
(:func:`upcast`). fp16 needs a loss scaler, or its small gradients underflow to zero; bf16 has fp32's range and
needs none.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch

__all__ = ["resolve_precision", "cpu_has_fast_bf16", "grad_scaler", "autocast", "upcast"]


def resolve_precision(device: torch.device, precision: str) -> str:
    """What ``--precision auto`` means on ``device``.

    Args:
        device: the run's device.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.

    Returns:
        For ``auto``: ``bf16`` on GPUs that have it (Ampere and later), ``fp16`` on older GPUs (V100, T4), ``bf16``
        on CPUs that multiply bf16 in hardware (:func:`cpu_has_fast_bf16`), ``fp32`` elsewhere; ``precision``
        itself otherwise.
    """
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"
    return precision


#: oneDNN instruction-set limits (``ONEDNN_MAX_CPU_ISA``) below its native bf16 kernels
_ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether bf16 autocast speeds up training on this CPU, as measured (benchmarks/README.md: 1.6x the step with
    AMX on an Intel Xeon, "End-to-end training throughput"; 1.44x the CPU time of a step with AVX512-BF16 on an AMD
    EPYC, one thread, "Issue 27: the levers of `cifar-budget-2`").

    True when the CPU has bf16 dot-product instructions (``amx_bf16`` or ``avx512_bf16`` in ``/proc/cpuinfo``),
    oneDNN may use them (its bf16 path is on and ``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA`` does not stop below
    ``AVX512_CORE_BF16``) and ATen runs vectorised kernels (``ATEN_CPU_CAPABILITY`` is not ``default``). Without
    them bf16 is emulated in fp32 and slower, so ``auto`` keeps fp32 there. Off Linux: False.
    """
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        if os.environ.get(var, "").upper() in _ONEDNN_ISAS_WITHOUT_BF16:
            return False
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT" or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return set()


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The loss scaler of the run: enabled for fp16; for fp32 and bf16 a disabled one, whose ``scale`` and
    ``unscale_`` do nothing and whose ``step`` is the optimiser's (the loop calls it the same way either way)."""
    return torch.amp.GradScaler(device.type, enabled=resolve_precision(device, precision) == "fp16")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of the forward pass (a no-op context for fp32)."""
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def upcast(t: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs of autocast as float32, for the loss; float32 and float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
