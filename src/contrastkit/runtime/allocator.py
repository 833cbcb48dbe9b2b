"""Keep freed host memory in the process between training steps (glibc malloc tuning for CPU runs).

A training step on a CPU allocates and frees the same activation tensors every step, many of them tens of MB
(the train_bench model at batch 256 x 2 views: 33.5 MB for one 16-channel 32x32 feature map). glibc's malloc serves
a block above its mmap threshold (128 KiB, rising dynamically to at most 32 MiB) with a fresh ``mmap`` and unmaps
it on ``free``; below it, freed memory at the top of the heap above the trim threshold goes back to the kernel too.
Either way the next step page-faults much of its working set in again, zero-filled by the kernel: 0.1 to 0.2
million minor faults per fp32 step of that model on the 2-core development machine, and 1.15x of its step time
(``benchmarks/step_bench.py --malloc both``); end to end, with the augmentation's and the loss's buffers as well,
contrastkit's CPU pipeline ran 1.26x to 1.32x faster with it (``benchmarks/train_bench.py``, benchmarks/README.md).

:func:`tune_malloc` raises both thresholds (``mallopt``), so freed blocks stay in the heap and the next step reuses
them, as PyTorch's caching allocator does on GPUs and as jemalloc/tcmalloc (``LD_PRELOAD``) do in Intel's CPU
training recipes. The price is memory: the process holds up to ``threshold`` bytes of freed memory rather than
returning it to the system (11% more peak RSS in that benchmark), memory a training process needs again every step.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_malloc", "tune_malloc_for", "malloc_state"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_DEFAULT_THRESHOLD = 1 << 30  # 1 GiB: above every activation of the models this library trains on CPUs
_state: str | None = None


def malloc_state() -> str:
    """What :func:`tune_malloc` did in this process: ``"tuned"``, or why not (``"not-tuned: ..."``)."""
    return _state or "not-tuned: tune_malloc was not called"


def _user_choice() -> str | None:
    """A choice the user already made for this process's allocator, which we leave alone."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return f"{name} is preloaded (LD_PRELOAD)"
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX"):
        if var in os.environ:
            return f"{var} is set"
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets glibc.malloc tunables"
    return None


def tune_malloc(threshold: int = _DEFAULT_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds to ``threshold`` bytes for the rest of this process.

    Does nothing (and returns False) off Linux/glibc, or when the user already chose: an allocator preloaded with
    ``LD_PRELOAD`` (jemalloc, tcmalloc, mimalloc), glibc's ``MALLOC_*`` variables, or ``glibc.malloc`` tunables in
    ``GLIBC_TUNABLES``. Calling it again is harmless. :func:`malloc_state` says what happened.

    Args:
        threshold: bytes; blocks up to this size come from (and return to) the heap rather than ``mmap``, and up to
            this much free memory at the top of the heap is kept.

    Returns:
        True when both thresholds were set.

    Raises:
        ValueError: ``threshold`` is not an int in [1 MiB, 2 GiB).
    """
    global _state
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not (1 << 20 <= threshold < 1 << 31):
        raise ValueError(f"threshold must be an int of bytes in [1 MiB, 2 GiB), got {threshold!r}")
    if not sys.platform.startswith("linux"):
        _state = f"not-tuned: {sys.platform} is not Linux"
        return False
    choice = _user_choice()
    if choice:
        _state = f"not-tuned: {choice}"
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl has no mallopt thresholds to speak of
    except (OSError, AttributeError):
        _state = f"not-tuned: {name} is not glibc"
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, threshold) == 1 and mallopt(_M_TRIM_THRESHOLD, threshold) == 1
    _state = f"tuned: mmap and trim thresholds {threshold} bytes" if ok else "not-tuned: mallopt refused"
    return ok


def tune_malloc_for(device, mode: str = "auto") -> bool:
    """The ``--malloc`` option of ``pretrain`` and ``eval``: ``"auto"`` tunes (:func:`tune_malloc`) for a CPU
    ``device`` only (a GPU run's activations live in PyTorch's caching allocator), ``"off"`` leaves malloc alone.

    Raises:
        ValueError: ``mode`` is not ``"auto"`` or ``"off"``.
    """
    if mode not in ("auto", "off"):
        raise ValueError(f"malloc must be auto or off, got {mode!r}")
    return mode == "auto" and device.type == "cpu" and tune_malloc()
