"""``--on-nonfinite skip`` without reading the device: take the step, then undo it where it was not finite.

Skipping a step on the host needs the finite flag there, a synchronisation per step on GPUs. Instead the trainer
snapshots what a step changes (parameters, the optimiser's state tensors, the model's buffers such as BatchNorm's
running statistics), always runs the optimiser, and then selects, on the device, the snapshot wherever the step was
not finite. A skipped step leaves every tensor bit-identical to its value before the step.

An optimiser state tensor that the step created (a momentum buffer on the first step) is set to zeros when the step
is undone. For SGD and LARS, whose first step sets the buffer to the gradient and every later one to
``momentum * buffer + gradient``, a zero buffer makes the next step identical to a first step.

On a GPU each tensor operation is a kernel launch, and a ResNet-18 has about 190 such tensors (65 parameters, 63
buffers, 65 momentum buffers): the snapshot lives in one flat buffer per (device, dtype), saved with one
multi-tensor copy and restored with a copy, one ``torch.where`` over the flat buffer and a copy back, a handful of
operations per step instead of one to three per tensor.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Rollback"]


class _FlatCopy:
    """A copy of a list of tensors in one flat buffer per (device, dtype).

    Args:
        tensors: what to copy (the copy is taken by :meth:`save`).
    """

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.signature = _signature(tensors)
        by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, t in enumerate(tensors):
            by_kind.setdefault((t.device, t.dtype), []).append(i)
        self.groups = []  # (positions in the list, flat buffer, its views shaped as the tensors)
        for (device, dtype), positions in by_kind.items():
            flat = torch.empty(sum(tensors[i].numel() for i in positions), dtype=dtype, device=device)
            self.groups.append((positions, flat, _views(flat, [tensors[i] for i in positions])))

    def save(self, tensors: list[torch.Tensor]) -> None:
        """Copy ``tensors`` (the list the buffers were shaped for) in: one multi-tensor copy per group."""
        for positions, _, views in self.groups:
            torch._foreach_copy_(views, [tensors[i] for i in positions])

    def restore_where(self, bad: torch.Tensor, tensors: list[torch.Tensor]) -> None:
        """``t = saved if bad else t`` for every tensor, bit for bit (NaN and inf included): per group, copy the
        live values into a scratch buffer, select there, copy back."""
        for positions, flat, _ in self.groups:
            live = [tensors[i] for i in positions]
            scratch = torch.empty_like(flat)
            scratch_views = _views(scratch, live)
            torch._foreach_copy_(scratch_views, live)
            torch.where(bad, flat, scratch, out=scratch)
            torch._foreach_copy_(live, scratch_views)


def _signature(tensors: list[torch.Tensor]) -> list[tuple]:
    return [(t.shape, t.dtype, t.device) for t in tensors]


def _views(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Consecutive pieces of ``flat`` shaped as the tensors of ``like`` (views: no copy, no kernel)."""
    views, offset = [], 0
    for t in like:
        views.append(flat[offset:offset + t.numel()].view(t.shape))
        offset += t.numel()
    return views


def _zero_where(bad: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    """``t = 0 if bad else t`` for tensors the step created (a first step's momentum buffers), through a flat
    scratch copy as :meth:`_FlatCopy.restore_where`."""
    scratch = _FlatCopy(tensors)
    scratch.save(tensors)
    for positions, flat, views in scratch.groups:
        flat.masked_fill_(bad, 0)
        torch._foreach_copy_([tensors[i] for i in positions], views)


class Rollback:
    """Snapshot before a step, undo it on the device where a flag says so.

    Args:
        model: the model whose buffers (BatchNorm running statistics) the forward pass updates.
        optimizer: the optimiser whose parameters and state the step updates.

    Example:
        >>> rollback = Rollback(model, optimizer)
        >>> rollback.save()                       # before the forward pass (BatchNorm updates its buffers there)
        >>> loss = ...; loss.backward(); finite = torch.isfinite(loss)
        >>> optimizer.step()
        >>> rollback.undo_where(~finite)          # nothing read back from the device
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self._copy: _FlatCopy | None = None
        self._state_keys: list[tuple[int, str]] = []

    def _tracked(self) -> tuple[list[torch.Tensor], list[tuple[int, str]]]:
        """The tensors a step changes: parameters, model buffers, then the optimiser's state tensors, with the
        (parameter position, key) of each state tensor."""
        tensors = [p.detach() for p in self.params] + [b.detach() for b in self.model.buffers()]
        keys = []
        for i, p in enumerate(self.params):
            for key, value in self.optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    keys.append((i, key))
                    tensors.append(value.detach())
        return tensors, keys

    def save(self) -> None:
        """Copy the parameters, the optimiser's state tensors and the model's buffers."""
        with torch.no_grad():
            tensors, self._state_keys = self._tracked()
            if self._copy is None or self._copy.signature != _signature(tensors):
                self._copy = _FlatCopy(tensors)  # the buffers are kept while the tensors keep their shapes
            self._copy.save(tensors)

    def undo_where(self, bad: torch.Tensor) -> None:
        """Restore the saved values where ``bad`` (a 0-dim bool tensor on the model's device) is True.

        Raises:
            RuntimeError: called before :meth:`save`.
        """
        if self._copy is None:
            raise RuntimeError("Rollback.undo_where called before Rollback.save")
        with torch.no_grad():
            tensors, keys = self._tracked()
            if keys == self._state_keys:
                self._copy.restore_where(bad, tensors)
                return
            # the step created state tensors (a first step's momentum buffers): as if they had never been
            fixed = len(tensors) - len(keys)
            state = dict(zip(keys, tensors[fixed:]))
            saved = tensors[:fixed] + [state[k] for k in self._state_keys]
            self._copy.restore_where(bad, saved)
            created = set(keys) - set(self._state_keys)
            _zero_where(bad, [state[k] for k in keys if k in created])
