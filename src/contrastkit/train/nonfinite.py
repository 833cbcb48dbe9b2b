"""The one guard against non-finite steps: an all-reduced finite flag per step, then stop or skip.

After the backward pass, :meth:`NonFiniteGuard.check` computes one flag on the device: are the loss and the
gradient norm finite? (With an fp16 loss scaler, an overflowing gradient is the scaler's to skip, so only the
loss counts.) The flag is all-reduced, so every rank takes, skips or stops at the same steps. What follows
depends on ``--on-nonfinite``, never on a value read back per step on a GPU:

* ``stop`` (default): the run raises :class:`NonFiniteError` naming the first bad step. On a CPU the flag is read at
  once (reading is free there); on a GPU the first bad step is kept on the device (:func:`first_nonfinite`) and
  checked at the next log or checkpoint (:meth:`NonFiniteGuard.raise_pending`), so no checkpoint holds a bad step.
* ``skip``: the flag goes to the optimiser as ``found_inf``, the protocol of ``torch.amp.GradScaler``: fused SGD and
  :class:`~contrastkit.train.optim.LARS` leave the parameters and their state untouched at such a step, on the
  device. The model's buffers (BatchNorm's running statistics, which the step's forward pass already updated, with
  NaN if its activations were) go back to their values after the last step, selected on the device by the same
  flag.

fp16 overflow is the loss scaler's: ``scaler.step`` hands its own ``found_inf`` to the same optimisers and lowers
the scale. The optimisers' momentum buffers exist from the start (:func:`~.optim.build_optimizer`), so a skipped
first step leaves nothing uninitialised behind.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..runtime import distributed as ckdist

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
    """Checks each step's loss and gradients and applies the run's rule (module docstring).

    Args:
        mode: ``stop`` or ``skip`` (``--on-nonfinite``).
        model: the unwrapped model (whose gradients are checked).
        optimizer: the run's optimiser (fused SGD or LARS: both take ``found_inf``).
        scaler: the run's loss scaler (``torch.amp.GradScaler``; disabled unless fp16).
        device: the run's device.
        checkpoint: the run's checkpoint path, named in the error.
    """

    def __init__(self, mode: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, device: torch.device, checkpoint: Path) -> None:
        self.skip = mode == "skip"
        if self.skip and not getattr(optimizer, "_step_supports_amp_scaling", False):
            raise ValueError(f"--on-nonfinite skip needs an optimiser that skips a step on the device (fused SGD or "
                             f"LARS); {type(optimizer).__name__} does not")
        self.optimizer, self.scaler, self.checkpoint = optimizer, scaler, checkpoint
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers = list(model.buffers()) if self.skip else []
        self.saved_buffers = [b.detach().clone() for b in self.buffers]  # as after the last step
        self.read_at_once = not self.skip and device.type == "cpu"
        self.first_bad = torch.tensor(-1, device=device)
        self.skipped = torch.zeros((), dtype=torch.long, device=device)
        self.loss: torch.Tensor | None = None
        self.gnorm: torch.Tensor | None = None

    def check(self, loss: torch.Tensor, step: int, epoch: int) -> torch.Tensor:
        """After the backward of ``loss``: the step's finite flag (0-dim bool, on the device), all-reduced.

        In ``skip`` mode the optimiser's next step skips itself where the flag is False.

        Raises:
            NonFiniteError: ``stop`` mode on a CPU, at a non-finite step.
        """
        self.scaler.unscale_(self.optimizer)  # true gradients for the norm (a no-op without fp16)
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, float("inf"))
        self.loss, self.gnorm = loss, gnorm
        finite = torch.isfinite(loss)
        if not self.scaler.is_enabled():  # with fp16, an overflowing gradient is the scaler's
            finite = finite & torch.isfinite(gnorm)
        finite = ckdist.all_true(finite)
        if self.read_at_once:
            if not bool(finite):
                raise self.error(step, epoch)
        elif not self.skip:
            self.first_bad = first_nonfinite(self.first_bad, finite, step)
        else:
            self.optimizer.found_inf = (~finite).float()  # read by the optimiser's step (GradScaler's protocol)
            self.skipped += ~finite
            with torch.no_grad():
                for buffer, saved in zip(self.buffers, self.saved_buffers):
                    buffer.copy_(torch.where(finite, buffer, saved))
        return finite

    def after_step(self) -> None:
        """Take back the ``found_inf`` handed to the optimiser for this step; keep the buffers as they are now."""
        if self.skip and hasattr(self.optimizer, "found_inf"):
            del self.optimizer.found_inf
        self.keep_buffers()

    def keep_buffers(self) -> None:
        """``skip``: remember the model's buffers as they are now (after a step, or a checkpoint's restore), for a
        skipped step to go back to."""
        if self.skip:
            with torch.no_grad():
                torch._foreach_copy_(self.saved_buffers, self.buffers)

    def raise_pending(self, epoch: int) -> None:
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
