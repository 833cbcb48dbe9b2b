"""What to tell a user who stopped a run (Ctrl-C): which checkpoint survives and the command that resumes it.

The checkpoint is read from disk, since that is what a resume starts from: ``last.pt`` is replaced atomically
(:mod:`.checkpoint`), so it holds the last completed save whatever moment the run was stopped at.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["checkpoint_position", "interrupted_message", "resume_argv"]


def checkpoint_position(path: str | os.PathLike) -> dict | None:
    """``{epoch, step_in_epoch, global_step, epochs}`` of the checkpoint at ``path``; None if there is none or
    it cannot be read. The weights are memory-mapped, not read."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return {"epoch": int(state["epoch"]), "step_in_epoch": int(state["step_in_epoch"]),
                "global_step": int(state["global_step"]), "epochs": int(state["config"]["epochs"])}
    except Exception:  # any unreadable file: the message then says no checkpoint can be resumed from
        return None


def resume_argv(argv: Sequence[str], overwrite_from_config: bool = False) -> list[str]:
    """The ``pretrain`` arguments that resume the run ``argv`` started: ``--resume`` in place of ``--overwrite``.

    Args:
        argv: the command's arguments (``pretrain ...``).
        overwrite_from_config: ``--overwrite`` came from a ``--config`` file or recipe (``--no-overwrite`` is
            then added, since --resume and --overwrite exclude each other).
    """
    drop = {"--resume", "--no-resume", "--overwrite", "--no-overwrite"}
    args = [a for a in argv if a not in drop] + ["--resume"]
    return args + ["--no-overwrite"] if overwrite_from_config else args


def interrupted_message(checkpoint: str | os.PathLike, argv: Sequence[str] | None = None,
                        overwrite_from_config: bool = False) -> str:
    """The lines printed when a run is interrupted: the surviving checkpoint (epoch and step) and the command
    that resumes from it, or that there is none yet and the command that starts again.

    Args:
        checkpoint: the run's ``OUT/last.pt``.
        argv: the ``pretrain ...`` arguments of the interrupted command (None: no command is shown).
        overwrite_from_config: see :func:`resume_argv`.
    """
    pos = checkpoint_position(checkpoint)
    prefix = "torchrun ... -m contrastkit" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "contrastkit"
    if pos is None:
        lines = [f"interrupted before the first checkpoint: {checkpoint} does not exist, so there is nothing to "
                 f"resume"]
        if argv is not None:
            again = [a for a in argv if a not in ("--resume", "--no-resume", "--overwrite", "--no-overwrite")]
            lines.append(f"start again with: {prefix} {shlex.join([*again, '--overwrite'])}")
        return "\n".join(lines)
    where = (f"the end of epoch {pos['epoch']}" if pos["step_in_epoch"] == 0 else
             f"epoch {pos['epoch'] + 1}, step {pos['step_in_epoch']} in it")
    lines = [f"interrupted: {checkpoint} survives, saved at {where} of {pos['epochs']} (global step "
             f"{pos['global_step']}); steps after it are trained again on resume"]
    if argv is not None:
        lines.append(f"resume with: {prefix} {shlex.join(resume_argv(argv, overwrite_from_config))}")
    return "\n".join(lines)
