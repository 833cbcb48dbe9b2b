"""The optimiser step under one guard against non-finite values: ``--on-nonfinite stop|skip`` and fp16 overflow.

Every step computes one flag on the device: is the step finite? (The loss, and the gradient norm unless an fp16
loss scaler owns overflowing gradients.) The flag is all-reduced, so every rank takes, skips or stops at the same
steps. What follows depends on the mode, never on a value read back per step on a GPU:

* ``stop``: the run raises :class:`NonFiniteError` naming the first bad step. On a CPU the flag is read at once
  (reading is free there); on a GPU the first bad step is kept on the device (:func:`first_nonfinite`) and checked
  at the next log or checkpoint (:meth:`NonFiniteGuard.check`), so that no checkpoint ever holds a bad step.
* ``skip``: the step is taken, then undone on the device where it was not finite (:class:`~.rollback.Rollback`),
  and counted.
* fp16: a step whose scaled gradients overflow is the loss scaler's; it is skipped (fused SGD skips it inside its
  kernel; another optimiser, LARS, is undone by the same rollback) and the scale lowered. It is never an error.

The objective turns non-finite embeddings into a NaN loss (:mod:`.objective`), so they reach this guard too.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import distributed as ckdist
from .rollback import Rollback

__all__ = ["NonFiniteError", "NonFiniteGuard", "first_nonfinite"]


class NonFiniteError(RuntimeError):
    """The loss or a gradient became NaN/inf."""


def first_nonfinite(first_bad: torch.Tensor, finite: torch.Tensor, step: int) -> torch.Tensor:
    """The first non-finite step so far, kept on the device (-1: none yet).

    ``step`` enters as a scalar argument of the kernel: ``torch.tensor(step, device=...)`` would be a blocking
    host-to-device copy, which waits for every queued kernel (a host synchronisation per step on GPUs).
    """
    return torch.where(~finite & (first_bad < 0), step, first_bad)


class NonFiniteGuard:
    """Takes the optimiser step and applies the run's non-finite rule (module docstring).

    Args:
        mode: ``stop`` or ``skip`` (``--on-nonfinite``).
        model: the unwrapped model (its buffers are part of what a skipped step restores).
        optimizer: the run's optimiser.
        scaler: the fp16 loss scaler, or None.
        device: the run's device.
        checkpoint: the run's checkpoint path, named in the error.
    """

    def __init__(self, mode: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler | None, device: torch.device, checkpoint: Path) -> None:
        self.skip = mode == "skip"
        self.optimizer, self.scaler, self.checkpoint = optimizer, scaler, checkpoint
        self.params = [p for p in model.parameters() if p.requires_grad]
        # fp16 with an optimiser that cannot take the scaler's overflow flag on the device (LARS; fused SGD can):
        # scaler.step would read the flag back, so the step is taken and undone on the device where it overflowed
        self.undo_overflow = scaler is not None and not getattr(optimizer, "_step_supports_amp_scaling", False)
        self.rollback = Rollback(model, optimizer) if self.skip or self.undo_overflow else None
        self.read_at_once = not self.skip and device.type == "cpu"
        self.first_bad = torch.tensor(-1, device=device)
        self.skipped = torch.zeros((), dtype=torch.long, device=device)
        self.loss: torch.Tensor | None = None
        self.gnorm: torch.Tensor | None = None

    def before_forward(self) -> None:
        """Snapshot what a step changes, before the forward pass (which updates BatchNorm's running statistics)."""
        if self.rollback is not None:
            self.rollback.save()

    def step(self, loss: torch.Tensor, step: int, epoch: int) -> torch.Tensor:
        """The optimiser step after the backward of ``loss``; returns the step's finite flag (0-dim bool, device).

        Raises:
            NonFiniteError: ``stop`` mode on a CPU, at a non-finite step.
        """
        scaler, optimizer = self.scaler, self.optimizer
        if scaler is not None:
            scaler.unscale_(optimizer)  # true gradients for the norm; notes an overflow for scaler.step
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, float("inf"))
        self.loss, self.gnorm = loss, gnorm
        # a NaN loss on one rank alone can come with finite gradients (the objective zeroes non-finite embeddings),
        # so the flag itself is all-reduced; with fp16, an overflowing gradient is the scaler's
        finite = torch.isfinite(loss) if scaler is not None else torch.isfinite(loss) & torch.isfinite(gnorm)
        finite = ckdist.all_true(finite)
        if self.read_at_once:
            if not bool(finite):
                raise self.error(step, epoch)
        elif not self.skip:
            self.first_bad = first_nonfinite(self.first_bad, finite, step)
        if scaler is not None and not self.undo_overflow:
            scaler.step(optimizer)  # fused SGD skips an overflowing step on the device
        else:
            optimizer.step()
        if scaler is not None:
            scaler.update()  # from the overflow flag unscale_ recorded, on the device
        self._undo(finite, gnorm)
        return finite

    def _undo(self, finite: torch.Tensor, gnorm: torch.Tensor) -> None:
        """Undo the step on the device where it was not finite (skip) or overflowed (fp16 without fused steps)."""
        undo = ~finite if self.skip else None
        if self.undo_overflow:  # unscaled gradients are non-finite exactly where the scaler found an overflow
            overflow = ~torch.isfinite(gnorm)
            undo = overflow if undo is None else undo | overflow
        if undo is not None:
            self.rollback.undo_where(undo)
        if self.skip:
            self.skipped += ~finite

    def check(self, epoch: int) -> None:
        """Raise if a non-finite step is pending (``stop`` on a GPU); reads one value back from the device.

        Raises:
            NonFiniteError: naming the first non-finite step.
        """
        first = int(self.first_bad)
        if first >= 0:
            raise self.error(first, epoch)

    def error(self, step: int, epoch: int) -> NonFiniteError:
        """The error for a non-finite ``step``, naming the last checkpoint and what to do."""
        where = f"the last checkpoint is {self.checkpoint}" if self.checkpoint.exists() else \
            "no checkpoint was written yet"
        return NonFiniteError(
            f"non-finite loss or gradient at step {step} (epoch {epoch}): loss={float(self.loss)}, "
            f"grad norm={float(self.gnorm)}; {where}. Lower --lr, check the data, or pass --on-nonfinite skip to "
            f"skip such steps.")
