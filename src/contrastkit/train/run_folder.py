"""The run folder ``OUT``: what a run and the commands on its checkpoint write there, the check that a new run
does not mix its outputs with an old one's, ``--overwrite``'s clearing of them, and what a stopped run tells the
user (the surviving checkpoint and the command that resumes it).

A run writes ``config.yaml``, ``last.pt`` (and ``last.prev.pt``), ``metrics.jsonl``, ``tensorboard/``,
``summary.json`` and, with ``--skip-bad-files``, ``bad_files.txt``; ``eval`` writes ``eval_*.json`` / ``eval_*.md``
beside the checkpoint and ``embed`` an ``.npy`` / ``.csv`` / ``.json`` triple wherever it is pointed. Starting a
second run there without ``--resume`` would replace the model while the old run's evaluations stayed beside it,
so it is refused unless ``--overwrite`` says to delete them first.

The checkpoint that a stopped run names is read from disk, since that is what a resume starts from: ``last.pt``
is replaced atomically (:func:`~contrastkit.models.save_checkpoint`), so it holds the last completed save whatever
moment the run was stopped at.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Sequence

import torch

from ..config import PretrainConfig
from ..runtime.files import check_output_dir

__all__ = ["RUN_FILES", "run_outputs", "check_fresh_out", "clear_run_outputs", "discard_failed_start", "prepare_out",
           "checkpoint_position", "interrupted_message", "resume_argv"]

#: The files and folders a pretraining run writes in OUT; any of them there means OUT holds a run.
RUN_FILES = ("last.pt", "last.prev.pt", "last.pt.tmp", "config.yaml", "metrics.jsonl", "summary.json",
             "bad_files.txt", "tensorboard")


def _embedding_files(out: Path) -> list[Path]:
    """The ``embed`` triples in ``out``: a ``.json`` of embedding metadata with its ``.npy`` and ``.csv``."""
    found = []
    for meta in sorted(out.glob("*.json")):
        npy, table = meta.with_suffix(".npy"), meta.with_suffix(".csv")
        if not (npy.is_file() and table.is_file()):
            continue
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and {"format_version", "what", "dim", "count"} <= set(info):
            found += [meta, npy, table]
    return found


def run_outputs(out: str | Path) -> list[Path]:
    """What a run and ``eval`` / ``embed`` on its checkpoint wrote in ``out`` (empty when ``out`` holds none)."""
    out = Path(out).expanduser()
    if not out.is_dir():
        return []
    found = [out / name for name in RUN_FILES if (out / name).exists()]
    found += sorted(p for p in out.glob("eval_*") if p.suffix in (".json", ".md") and p.is_file())
    return found + _embedding_files(out)


def check_fresh_out(cfg: PretrainConfig) -> None:
    """Refuse to start a new run (no ``--resume``) in an ``--out`` that holds one, unless ``--overwrite``.

    Raises:
        ValueError: naming what ``OUT`` holds and the options that continue it, start elsewhere or replace it.
    """
    if cfg.resume or cfg.overwrite:
        return
    held = [p.name for p in run_outputs(cfg.out) if p.name in RUN_FILES]
    if held:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ValueError(f"--out {cfg.out} already holds a run ({shown}); continue it with --resume (--resume "
                         f"--extend to train it for more --epochs), choose another --out, or give --overwrite "
                         f"to delete its outputs and start again")


def clear_run_outputs(out: str | Path) -> list[Path]:
    """Delete what :func:`run_outputs` finds in ``out`` (``--overwrite``); other files stay. Returns the paths."""
    removed = run_outputs(out)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return removed


def _started(out: Path) -> bool:
    """Whether a run in ``out`` has anything to keep: a checkpoint, or a logged step."""
    if any((out / name).exists() for name in ("last.pt", "last.prev.pt")):
        return True
    metrics = out / "metrics.jsonl"
    return metrics.is_file() and metrics.stat().st_size > 0


def discard_failed_start(out: str | Path, created: bool) -> None:
    """After a run failed before its first logged step or checkpoint (an unreadable image found by the first
    batch, a bad option of the model), remove what it wrote: the whole folder when this run ``created`` it, else
    its outputs only (:func:`clear_run_outputs`). A run that logged a step or wrote a checkpoint is kept whole."""
    out = Path(out)
    if not out.is_dir() or _started(out):
        return
    if created:
        shutil.rmtree(out, ignore_errors=True)
    else:
        clear_run_outputs(out)


def prepare_out(cfg: PretrainConfig, rank: int, fresh: bool) -> Path:
    """Create ``OUT`` on rank 0, checked writable with room for checkpoints; returns its ``bad_files.txt`` (emptied
    for a fresh run). With ``--overwrite``, the outputs of the run ``OUT`` holds are deleted first."""
    out = Path(cfg.out).expanduser()
    bad_files_log = out / "bad_files.txt"
    if rank == 0:
        if cfg.overwrite:
            clear_run_outputs(out)
        check_output_dir(out)
        if fresh:
            bad_files_log.write_text("")
    return bad_files_log


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
