"""A memory queue of past keys: the negatives (and, with labels, positives) of MoCo and SupCon's memory variant."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..runtime import distributed

__all__ = ["MemoryQueue"]


class MemoryQueue(nn.Module):
    """The last K keys and their labels, first in, first out (MoCo, He et al. 2020, Sec. 3.2).

    The training step computes its loss over the batch's keys plus :meth:`contents` (the memory of
    :class:`~contrastkit.losses.MomentumContrastLoss`, without gradient), *then* :meth:`push` es the batch's keys, so
    a queued key never meets the batch it came from twice. Under ``torch.distributed`` the keys (and labels) of every rank
    are gathered, in rank order, before they are written, so every rank holds the identical queue and every rank's
    loss sees the same memory. Every rank must push the same number of keys (the trainer's even batches).

    The keys, the labels, the write position and the fill count are state: the keys and labels are buffers, the
    two counters the module's extra state, so a checkpoint (``state_dict``) holds the whole queue and a resumed run
    continues with the queue it stopped with. Until K keys have been pushed, only the pushed ones are contents.

    Args:
        size: K, the number of keys held.
        dim: D, the keys' dimension.
        label_shape: None (no labels: every key is a negative), ``()`` (a class index per key, -1: none) or
            ``(C,)`` (multi-hot labels).

    Raises:
        ValueError: K or D < 1, or a label shape other than these.

    Shape:
        keys (K, D), labels (K,) or (K, C).
    """

    def __init__(self, size: int, dim: int, label_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"the queue size K must be an integer >= 1, got {size!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"the key dimension D must be an integer >= 1, got {dim!r}")
        if label_shape is not None and tuple(label_shape) != () and not (
                len(label_shape) == 1 and isinstance(label_shape[0], int) and label_shape[0] >= 1):
            raise ValueError(f"label_shape must be None, () or (C,) with C >= 1, got {label_shape!r}")
        self.size, self.dim = size, dim
        self.register_buffer("keys", torch.zeros(size, dim))  # (K, D)
        if label_shape is None:
            self.labels: torch.Tensor | None = None
        elif tuple(label_shape) == ():
            self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))  # (K,)
        else:
            self.register_buffer("labels", torch.zeros(size, label_shape[0]))  # (K, C)
        self.pointer = 0  # where the next key is written
        self.filled = 0  # keys held, up to K

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, filled={self.filled}"

    def contents(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The keys held and their labels (None without labels), in slot order; nothing is read from the device.

        Shape:
            -> keys (F, D), labels (F,) or (F, C), F = min(K, keys pushed).
        """
        keys = self.keys[: self.filled]
        return keys, None if self.labels is None else self.labels[: self.filled]

    @torch.no_grad()
    def push(self, keys: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Write this step's keys (and labels), gathered from every rank, over the oldest ones.

        Keys that are not all finite (an fp16 overflow in the momentum encoder) are not written: their slots keep
        what they held, so one bad step cannot poison the queue. The check stays on the device.

        Args:
            keys: this rank's keys (detached here).
            labels: their labels, of the queue's kind; None for a queue without labels.

        Raises:
            ValueError: keys not (n, D); labels missing or of the wrong shape; K not a multiple of the keys of
                all ranks together.

        Shape:
            keys (n, D), labels (n,) or (n, C).
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must have shape (n, D) = (n, {self.dim}), got {tuple(keys.shape)}")
        if (labels is None) != (self.labels is None):
            raise ValueError("this queue holds labels: push labels with the keys" if labels is None else
                             "this queue holds no labels, but labels were pushed")
        if labels is not None and tuple(labels.shape) != (keys.shape[0], *self.labels.shape[1:]):
            raise ValueError(f"labels must have shape {(keys.shape[0], *self.labels.shape[1:])}, "
                             f"got {tuple(labels.shape)}")
        world = distributed.get_world_size()
        sizes = [keys.shape[0]] * world  # even batches: no size exchange
        keys = distributed.gather_no_grad(keys.detach().to(self.keys.dtype), sizes)  # (n_all, D)
        n = keys.shape[0]
        if self.size % n:
            raise ValueError(f"the queue size K={self.size} must be a multiple of the keys each step adds, "
                             f"{n} (the views of the global batch)")
        slot = slice(self.pointer, self.pointer + n)
        finite = torch.isfinite(keys).all()  # () on the device
        self.keys[slot] = torch.where(finite, keys, self.keys[slot])
        if labels is not None:
            labels = distributed.gather_no_grad(labels.to(self.labels.dtype), sizes)  # (n_all,) or (n_all, C)
            self.labels[slot] = torch.where(finite, labels, self.labels[slot])
        self.pointer = (self.pointer + n) % self.size
        self.filled = min(self.size, self.filled + n)

    def get_extra_state(self) -> dict[str, Any]:
        return {"pointer": self.pointer, "filled": self.filled}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        pointer, filled = int(state["pointer"]), int(state["filled"])
        if not (0 <= pointer < self.size and 0 <= filled <= self.size):
            raise ValueError(f"a queue of K={self.size} keys cannot be at position {pointer} with {filled} held")
        self.pointer, self.filled = pointer, filled
