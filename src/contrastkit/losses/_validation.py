"""Input checks shared by the losses: each error says what was received and what is expected."""
from __future__ import annotations

import contextlib
import functools
import math
import numbers
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F

__all__ = [
    "check_temperature",
    "check_positive_float",
    "check_chunk_size",
    "check_embeddings",
    "check_flag",
    "check_pair",
    "check_pair_with_negatives",
    "check_labels",
    "check_multi_hot",
    "check_memory",
    "compute_dtype",
    "fp32_region",
    "computes_in_fp32",
    "normalize",
]


def check_positive_float(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite real > 0 (>= 0 with ``allow_zero``).

    Raises:
        TypeError: ``value`` is not a real number (bools are refused).
        ValueError: ``value`` is not finite, or not > 0 (>= 0).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value


def check_temperature(value: object) -> float:
    """Check a temperature tau: a finite real > 0.

    Raises:
        TypeError: not a real number.
        ValueError: not finite or <= 0.
    """
    return check_positive_float("temperature", value)


def check_chunk_size(value: object) -> int | None:
    """Check ``chunk_size``: None (automatic) or an int >= 1.

    Raises:
        TypeError: not None or an int.
        ValueError: an int < 1.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"chunk_size must be None or an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"chunk_size must be None or an int >= 1, got {value}")
    return int(value)


def check_embeddings(name: str, x: object, shape_doc: str, check_values: bool = True) -> torch.Tensor:
    """Check that ``x`` is a floating tensor with ``len(shape_doc)`` dims, no empty dim, all finite.

    Args:
        name: the argument's name, for the message.
        x: the value received.
        shape_doc: the expected shape in letters, e.g. ``"ND"`` or ``"NVD"``.
        check_values: also check that the values are finite (reads one flag back from the device: a host
            synchronisation on GPUs).

    Returns:
        ``x``, unchanged.

    Raises:
        TypeError: not a tensor, or not a floating dtype.
        ValueError: wrong number of dims, an empty dim, or a NaN/inf value.
    """
    expected = "(" + ", ".join(shape_doc) + ")"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != len(shape_doc):
        raise ValueError(f"{name} must have shape {expected}, got {x.dim()} dims with shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must have no empty dimension, got shape {tuple(x.shape)}")
    if check_values and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite value(s) in shape {tuple(x.shape)}")
    return x


def check_pair(z1: object, z2: object, check_values: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Check two views ``z1``, ``z2`` of shape (N, D) that agree in shape, dtype and device.

    ``check_values`` as :func:`check_embeddings`.

    Raises:
        TypeError: not floating tensors, or different dtypes.
        ValueError: wrong dims, different shapes or devices, non-finite values.
    """
    z1 = check_embeddings("z1", z1, "ND", check_values)
    z2 = check_embeddings("z2", z2, "ND", check_values)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.dtype != z2.dtype:
        raise TypeError(f"z1 and z2 must have the same dtype, got {z1.dtype} and {z2.dtype}")
    if z1.device != z2.device:
        raise ValueError(f"z1 and z2 must be on the same device, got {z1.device} and {z2.device}")
    return z1, z2


def check_flag(name: str, value: object) -> bool:
    """Return ``value`` if it is exactly True or False (not 0, 1 or a string); raise TypeError otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_pair_with_negatives(who: str, z1: object, z2: object, check_values: bool = True
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`check_pair`, plus N >= 2 so that every anchor has a negative (one of its 2(N-1) other views).

    Args:
        who: the calling loss, for the message.
        z1, z2: the two views received.
        check_values: as :func:`check_pair`.

    Raises:
        TypeError, ValueError: as :func:`check_pair`; ValueError also for N < 2.
    """
    z1, z2 = check_pair(z1, z2, check_values)
    if z1.shape[0] < 2:
        raise ValueError(f"{who} needs N >= 2 samples so that every anchor has a negative, got N={z1.shape[0]}")
    return z1, z2


def check_labels(labels: object, num_samples: int, device: torch.device, check_values: bool = True) -> torch.Tensor:
    """Check integer class labels of shape (N,), each >= -1 (-1 marks an unlabelled sample).

    Args:
        labels: the value received.
        num_samples: N, from the features.
        device: where the features live; the labels are moved there.
        check_values: also check that every label is >= -1 (reads the minimum back from the device).

    Returns:
        The labels as int64 on ``device``.

    Raises:
        TypeError: not a tensor, or not an integer dtype (float and bool labels are refused).
        ValueError: shape other than (N,), or a label < -1.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be None or an integer torch.Tensor of shape (N,), got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must have an integer dtype (e.g. torch.int64), got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != num_samples:
        raise ValueError(
            f"labels must have shape (N,) = ({num_samples},) to match the features' N={num_samples} samples, "
            f"got shape {tuple(labels.shape)}"
        )
    labels = labels.to(device=device, dtype=torch.long)
    if check_values and num_samples and int(labels.min()) < -1:
        raise ValueError(f"labels must be >= 0, or -1 for an unlabelled sample, got minimum {int(labels.min())}")
    return labels


def check_multi_hot(labels: torch.Tensor, num_samples: int, device: torch.device, check_values: bool = True
                    ) -> torch.Tensor:
    """Check multi-hot labels of shape (N, C): entry (n, c) is 1 when sample n has label c, else 0.

    Args:
        labels: a bool, integer or floating tensor.
        num_samples: N, from the features.
        device: where the features live; the labels are moved there.
        check_values: also check that every entry is 0 or 1 (reads a flag back from the device).

    Returns:
        The labels as float32 on ``device``.

    Raises:
        TypeError: a complex dtype.
        ValueError: not of shape (N, C) with C >= 1, or (checked) an entry other than 0 and 1.
    """
    if labels.is_complex():
        raise TypeError(f"multi-hot labels must be bool, integer or floating 0/1 values, got dtype {labels.dtype}")
    if labels.dim() != 2 or labels.shape[0] != num_samples or labels.shape[1] < 1:
        raise ValueError(f"multi-hot labels must have shape (N, C) = ({num_samples}, C) with C >= 1 to match the "
                         f"features' N={num_samples} samples, got shape {tuple(labels.shape)}")
    labels = labels.to(device=device, dtype=torch.float32)
    if check_values and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"labels of shape {tuple(labels.shape)} are multi-hot labels (N, C) and must hold only 0 "
                         f"and 1 (1: the sample has the label), got other values; class indices take shape (N,)")
    return labels


def check_memory(memory: object, memory_labels: object, dim: int, labels: torch.Tensor | None,
                 device: torch.device, check_values: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Check memory rows (past samples' features, a queue of keys) against the batch's features and labels.

    Args:
        memory: a floating tensor (K, D), or None.
        memory_labels: labels of the rows, of the batch labels' kind ((K,) class indices or (K, C) multi-hot), or
            None (every row unlabelled).
        dim: D, from the features.
        labels: the batch's checked labels, or None.
        device: where the features live.
        check_values: as :func:`check_embeddings` and the label checks.

    Returns:
        ``(memory, memory_labels)``; both None for an empty memory (K = 0).

    Raises:
        TypeError: memory not a floating tensor; memory_labels of the wrong dtype.
        ValueError: wrong shapes, another device, non-finite rows, or memory labels without batch labels.
    """
    if memory is None:
        if memory_labels is not None:
            raise ValueError("memory_labels were given without memory")
        return None, None
    if isinstance(memory, torch.Tensor) and memory.dim() == 2 and memory.shape[0] == 0:
        return None, None
    memory = check_embeddings("memory", memory, "KD", check_values)
    if memory.shape[1] != dim:
        raise ValueError(f"memory has D={memory.shape[1]} but the features have D={dim}")
    if memory.device != device:
        raise ValueError(f"memory is on {memory.device} but the features are on {device}")
    if memory_labels is None:
        return memory, None
    if labels is None:
        raise ValueError("memory_labels need labels for the batch too (without labels every sample is its own "
                         "class and the memory rows are negatives)")
    k = memory.shape[0]
    if labels.dim() == 2:
        memory_labels = check_multi_hot(memory_labels, k, device, check_values)
        if memory_labels.shape[1] != labels.shape[1]:
            raise ValueError(f"memory_labels have C={memory_labels.shape[1]} labels but the batch's have "
                             f"C={labels.shape[1]}")
        return memory, memory_labels
    return memory, check_labels(memory_labels, k, device, check_values)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 and bfloat16 are computed in float32; float32 and float64 as they are."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def fp32_region(device: torch.device) -> contextlib.AbstractContextManager:
    """A region where autocast is off for ``device``'s type, so a loss computes in its compute dtype (float32, or
    float64) whatever the caller's autocast state: inside ``torch.autocast`` the matmuls would otherwise run in
    bf16/fp16. A device type without autocast (meta) needs nothing.
    """
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


_F = TypeVar("_F", bound=Callable)


def computes_in_fp32(fn: _F) -> _F:
    """Decorator: run ``fn`` inside :func:`fp32_region` of the device of its first tensor argument.

    Every public loss goes through it, so that ``torch.autocast`` around a loss call changes neither its value nor
    its gradients (the docs promise an fp32 loss). Without a tensor argument ``fn`` runs as is (its own checks
    then raise).
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensor = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if tensor is None:
            return fn(*args, **kwargs)
        with fp32_region(tensor.device):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dimension in the compute dtype, safely for any finite input.

    Each row is first divided by its largest absolute value (detached: the
    result is scale invariant, so this changes no gradient), so squares neither
    overflow (|x| ~ 1e38) nor underflow (subnormal x). An all-zero row stays zero.

    Shape:
        x (*, D) -> (*, D).
    """
    x = x.to(compute_dtype(x.dtype))
    peak = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)  # (*, 1)
    return F.normalize(x / peak, dim=-1)
