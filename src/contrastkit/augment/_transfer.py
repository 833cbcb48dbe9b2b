"""How BatchAugment splits a batch and moves its random parameters to the device.

On a CPU the work is split into cache-sized chunks (one channel plane of a chunk near 64k floats), and the
parameters are already where the pixels are. On an accelerator every kernel launch and every small host-to-device
copy costs more than the arithmetic of a 224-px chunk: the whole batch is one chunk, and its parameters travel as
one packed (pinned, on CUDA) buffer, one copy per view.
"""
from __future__ import annotations

import torch

__all__ = ["chunk_rows", "pack_to_device"]

_CPU_PLANE_FLOATS = 1 << 16  # one channel plane of a CPU chunk: 64k floats, 256 KB
_CPU_MIN_ROWS = 4
_ALIGN = 8  # bytes: every packed tensor starts on an int64 / float64 boundary


def chunk_rows(device: torch.device, size: int, batch: int) -> int:
    """Samples per BatchAugment chunk on ``device``.

    Args:
        device: where the views are rendered.
        size: output side S.
        batch: B, the number of samples of a view.

    Returns:
        On the CPU ``max(4, 65536 // S^2) x threads``, so that the working set stays in cache and temporaries
        avoid the allocator's page faults; on any other device B (one chunk: a few dozen kernels per view).
    """
    if device.type != "cpu":
        return max(1, batch)
    per = max(_CPU_MIN_ROWS, _CPU_PLANE_FLOATS // (size * size))
    return per * max(1, torch.get_num_threads())


def pack_to_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move many small CPU tensors to ``device`` in one copy.

    The tensors are packed into one byte buffer (pinned on CUDA, so the copy is asynchronous), copied with
    ``non_blocking=True``, and split on the device into views of their dtypes and shapes: no kernel besides the
    copy. On the CPU the tensors are returned as they are.

    Args:
        tensors: CPU tensors of any dtypes and shapes.
        device: the destination.

    Returns:
        The same keys, tensors on ``device``.
    """
    if device.type == "cpu":
        return dict(tensors)
    layout, total = [], 0
    for key, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        layout.append((key, total, nbytes, t.dtype, t.shape))
        total += -(-nbytes // _ALIGN) * _ALIGN
    host = torch.empty(max(total, _ALIGN), dtype=torch.uint8, pin_memory=device.type == "cuda")  # (bytes,)
    for (key, offset, nbytes, dtype, shape) in layout:
        if nbytes:
            host[offset:offset + nbytes].view(dtype).view(shape).copy_(tensors[key])
    moved = host.to(device, non_blocking=True)  # the one copy
    return {key: moved[offset:offset + nbytes].view(dtype).view(shape) for key, offset, nbytes, dtype, shape in layout}
