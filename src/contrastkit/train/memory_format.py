"""Whether a run uses the channels_last memory format, and the CPU convolutions that must not.

channels_last makes oneDNN's CPU convolutions faster (benchmarks/README.md), but in the oneDNN that
PyTorch 2.14 ships, the weight gradient of a strided 1x1 convolution (a ResNet's downsample shortcut) in
channels_last is broken when the convolution has few input channels: the process crashes, hangs, or gets a
wrong gradient. ``benchmarks/onednn_strided_1x1.py`` measures where: on an Intel Xeon (AVX-512, AMX) 4, 8 and 12
input channels fail at some sizes, under ``ONEDNN_MAX_CPU_ISA=AVX2`` 4 channels do, and 16 or more never did
(``tests/train/test_memory_format.py`` checks that side).
Narrow ResNets meet it (``--width 0.0625`` gives a 4-channel shortcut), so on a CPU such a model trains in
the default format.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["FEWEST_SAFE_CHANNELS", "unsafe_channels_last_convs", "use_channels_last", "strided_1x1_gradient_error"]

#: Strided 1x1 convolutions with fewer input channels than this are not run in channels_last on a CPU.
FEWEST_SAFE_CHANNELS = 16


def unsafe_channels_last_convs(model: nn.Module) -> list[str]:
    """Names of the strided 1x1 convolutions whose CPU weight gradient fails in channels_last."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)
            and m.in_channels < FEWEST_SAFE_CHANNELS]


def use_channels_last(setting: str, model: nn.Module, device: torch.device) -> bool:
    """``--channels-last on|off|auto`` for ``model`` on ``device``.

    ``auto`` is on for GPUs and CPUs, except on a CPU for a model with an unsafe convolution (above);
    ``on`` with such a model on a CPU is an error that names the convolution.
    """
    if setting == "off" or (setting == "auto" and device.type not in ("cuda", "cpu")):
        return False
    unsafe = unsafe_channels_last_convs(model) if device.type == "cpu" else []
    if not unsafe:
        return True
    if setting == "on":
        m = model.get_submodule(unsafe[0])
        raise ValueError(
            f"--channels-last on: {unsafe[0]} is a strided 1x1 convolution with {m.in_channels} input channels, "
            f"and oneDNN's CPU weight gradient for it in channels_last crashes or is wrong below "
            f"{FEWEST_SAFE_CHANNELS} channels; use --channels-last auto (it trains this model in the default "
            f"format on a CPU) or a wider encoder (--width)")
    return False


def strided_1x1_gradient_error(channels: int, batch: int, size: int, seed: int = 0) -> float:
    """Relative error of the channels_last weight gradient of a stride-2 1x1 convolution (C to 2C channels,
    ``batch`` images of ``size`` px) against the float64 NCHW one: the check behind :data:`FEWEST_SAFE_CHANNELS`.

    Call it in a fresh process: where oneDNN fails it may crash the process or hang it.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(2 * channels, channels, 1, 1, generator=g)
    x = torch.randn(batch, channels, size, size, generator=g)
    grad_out = torch.randn(batch, 2 * channels, (size + 1) // 2, (size + 1) // 2, generator=g)
    cl = torch.channels_last
    w_cl = w.to(memory_format=cl).requires_grad_()
    nn.functional.conv2d(x.to(memory_format=cl), w_cl, stride=2).backward(grad_out.to(memory_format=cl))
    w64 = w.double().requires_grad_()
    nn.functional.conv2d(x.double(), w64, stride=2).backward(grad_out.double())
    return ((w_cl.grad.double() - w64.grad).abs().max() / w64.grad.abs().max()).item()
