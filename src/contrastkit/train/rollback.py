"""``--on-nonfinite skip`` without reading the device: take the step, then undo it where it was not finite.

Skipping a step on the host needs the finite flag there, a synchronisation per step on GPUs. Instead the trainer
snapshots what a step changes (parameters, the optimiser's state tensors, the model's buffers such as BatchNorm's
running statistics), always runs the optimiser, and then selects, on the device, the snapshot wherever the step was
not finite. A skipped step leaves every tensor bit-identical to its value before the step.

An optimiser state tensor that the step created (a momentum buffer on the first step) is set to zeros when the step
is undone. For SGD and LARS, whose first step sets the buffer to the gradient and every later one to
``momentum * buffer + gradient``, a zero buffer makes the next step identical to a first step.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Rollback"]


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
        self._params: list[torch.Tensor] = []
        self._buffers: list[torch.Tensor] = []
        self._state: list[dict[str, torch.Tensor]] = []

    def save(self) -> None:
        """Copy the parameters, the optimiser's state tensors and the model's buffers."""
        with torch.no_grad():
            self._params = [p.detach().clone() for p in self.params]
            self._buffers = [b.detach().clone() for b in self.model.buffers()]
            self._state = [{k: v.detach().clone() for k, v in self.optimizer.state.get(p, {}).items()
                            if isinstance(v, torch.Tensor)} for p in self.params]

    def undo_where(self, bad: torch.Tensor) -> None:
        """Restore the saved values where ``bad`` (a 0-dim bool tensor on the model's device) is True.

        Raises:
            RuntimeError: called before :meth:`save`.
        """
        if len(self._params) != len(self.params):
            raise RuntimeError("Rollback.undo_where called before Rollback.save")
        with torch.no_grad():
            for p, saved in zip(self.params, self._params):
                p.copy_(torch.where(bad, saved, p))
            for b, saved in zip(self.model.buffers(), self._buffers):
                b.copy_(torch.where(bad, saved, b))
            for p, saved_state in zip(self.params, self._state):
                for key, value in self.optimizer.state.get(p, {}).items():
                    if not isinstance(value, torch.Tensor):
                        continue
                    before = saved_state.get(key)
                    if before is None:  # created by this step: as if it had never been
                        before = torch.zeros((), dtype=value.dtype, device=value.device)
                    value.copy_(torch.where(bad, before, value))
