"""Numeric precision of a training step: what ``--precision`` means on a device, autocast, the fp16 loss scaler.

The forward pass runs under autocast (bf16 or fp16) when asked; the loss always takes float32 embeddings
(:func:`upcast`). fp16 needs a loss scaler, or its small gradients underflow to zero; bf16 has fp32's range and
needs none.
"""
from __future__ import annotations

import contextlib

import torch

__all__ = ["resolve_precision", "grad_scaler", "autocast", "upcast"]


def resolve_precision(device: torch.device, precision: str) -> str:
    """What ``--precision auto`` means on ``device``.

    Args:
        device: the run's device.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.

    Returns:
        ``bf16`` on GPUs that have it (Ampere and later), ``fp16`` on older GPUs (V100, T4), ``fp32`` elsewhere for
        ``auto``; ``precision`` itself otherwise.
    """
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


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
