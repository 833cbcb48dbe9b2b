"""The run folder ``OUT``: what a run and the commands on its checkpoint write there, the check that a new run
does not mix its outputs with an old one's, and ``--overwrite``'s clearing of them.

A run writes ``config.yaml``, ``last.pt`` (and ``last.prev.pt``), ``metrics.jsonl``, ``tensorboard/``,
``summary.json`` and, with ``--skip-bad-files``, ``bad_files.txt``; ``eval`` writes ``eval_*.json`` / ``eval_*.md``
beside the checkpoint and ``embed`` an ``.npy`` / ``.csv`` / ``.json`` triple wherever it is pointed. Starting a
second run there without ``--resume`` would replace the model while the old run's evaluations stayed beside it,
so it is refused unless ``--overwrite`` says to delete them first.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..config import PretrainConfig

__all__ = ["RUN_FILES", "run_outputs", "check_fresh_out", "clear_run_outputs", "discard_failed_start"]

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
