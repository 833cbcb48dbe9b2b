"""Choosing the device a command runs on: one rule for ``pretrain``, ``eval``, ``embed`` and the Python API."""
from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["resolve_device"]


def resolve_device(device: Any, name: str = "device") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a ``torch.device``) into a device with an index.

    ``auto`` is the process's GPU when CUDA is available, else the CPU. A bare ``cuda`` (from ``auto`` or typed)
    means ``cuda:$LOCAL_RANK``: under ``torchrun`` each process drives its own GPU, and DistributedDataParallel and
    ``torch.cuda.set_device`` need the index (``torch.device("cuda")`` has none).

    Args:
        device: a device string or ``torch.device``.
        name: how the option is called in error messages (``--device`` on the command line, ``device`` in Python).

    Returns:
        The device.

    Raises:
        TypeError: ``device`` is neither a string nor a ``torch.device``.
        ValueError: not a device name, or a CUDA device asked for where CUDA is not available.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif not isinstance(device, str):
        raise TypeError(f"{name} must be a str or torch.device, got {type(device).__name__}")
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"{name} must be cpu, cuda, cuda:N or auto, got {device!r} (not a valid torch device "
                             f"name)") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {device} asked for, but CUDA is not available")
        if resolved.index is None:
            resolved = torch.device("cuda", _local_rank())
    return resolved


def _local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``, set by torchrun), 0 outside torchrun."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise ValueError(f"LOCAL_RANK must be an integer, got {os.environ['LOCAL_RANK']!r}") from exc
