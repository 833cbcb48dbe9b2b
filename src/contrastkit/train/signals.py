"""Stopping a run cleanly on a signal: SIGINT (Ctrl-C), SIGTERM (``kill``, ``timeout``, SLURM before it preempts
or requeues a job) and SIGUSR1 (SLURM's ``--signal=USR1@SECONDS``, sent ahead of the time limit).

While a run trains, :class:`StopSignals` turns each of them into a flag. The loop looks at the flag after each
step, beside ``--max-steps`` and ``--time-budget-s``: the run stops there, saves a checkpoint as at the end of any
stopped epoch, and then raises :class:`Interrupted`, whose exit code is the shell's for that signal (130 for
SIGINT, 128 + its number otherwise). A second Ctrl-C does not wait for the step to finish.

Under ``torchrun`` every rank gets the signal, but not at the same step: the flag is all-reduced at the log steps
(where the loss is read back anyway), so that every rank stops at the same step.
"""
from __future__ import annotations

import signal
import threading

import torch

from ..runtime import distributed as ckdist

__all__ = ["StopSignals", "Interrupted", "STOP_SIGNALS"]

#: the signals that stop a run at the next step with a checkpoint
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal after saving its checkpoint.

    Attributes:
        signum: the signal's number.
        exit_code: 130 for SIGINT, 128 + ``signum`` otherwise (what a shell reports for a process the signal
            killed).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class StopSignals:
    """Within ``with``: SIGINT, SIGTERM and SIGUSR1 set :attr:`received` instead of stopping the process (in the
    main thread only; elsewhere signals cannot be handled, and nothing changes). The previous handlers come back
    on exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: do not wait for the step
        self.received = signum

    def __enter__(self) -> "StopSignals":
        self.received = None
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def requested(self, at_log_step: bool, device: torch.device) -> bool:
        """Whether the run should stop after this step. Alone, the flag; under torchrun, the flag of any rank,
        agreed at log steps only (an all-reduce that the loss's read-back there already waits for)."""
        if not ckdist.is_distributed():
            return self.received is not None
        if not at_log_step:
            return False
        none_here = torch.tensor(self.received is None, device=device)
        if bool(ckdist.all_true(none_here)):  # no rank received a signal
            return False
        if self.received is None:  # another rank's: this one stops with it, as if it had been sent SIGTERM
            self.received = signal.SIGTERM
        return True

    def raise_if_received(self) -> None:
        """After the checkpoint: :class:`Interrupted` when a signal stopped the run."""
        if self.received is not None:
            raise Interrupted(self.received)
