"""The run folder ``OUT``: what a run writes there, one run at a time, replacing an old run without losing it, and
what a stopped run tells the user (the surviving checkpoint and the command that resumes it).

A run writes ``config.yaml``, ``last.pt`` (and ``last.prev.pt``), ``metrics.jsonl``, ``tensorboard/``,
``summary.json``, with ``--skip-bad-files`` ``bad_files.txt``, and what its method adds (distill's ``student.pt``).
It lists them in the folder's marker (:mod:`contrastkit.runtime.ownership`) before it creates them, and holds the
folder's writer lock from start to end (rank 0; the other ranks write nothing). ``eval``, ``embed`` and ``export``
list what they add beside the run.

* A folder with files but no marker is someone else's: no run starts there, with or without ``--overwrite``.
* A folder that holds a run's checkpoint takes a new run only with ``--overwrite`` (or continues with
  ``--resume``). A run folder without a checkpoint (a run killed before its first save) holds nothing to resume:
  the same command starts again there, its leftovers replaced.
* ``--overwrite`` moves the old run's listed files aside (``OUT/.replaced``) and deletes them only once the new
  run's first checkpoint is in place. A new run that fails or is stopped before then puts the old run back. A
  process killed in between leaves the marker saying so, and the next command on the folder finishes the
  replacement (there is a new checkpoint) or undoes it (there is none).
* A run that fails before its first checkpoint removes what it wrote, and the folder and marker if it created
  them; anything else stays.

The checkpoint that a stopped run names is read from disk, since that is what a resume starts from: ``last.pt``
is replaced atomically (:func:`~contrastkit.models.save_checkpoint`), so it holds the last completed save whatever
moment the run was stopped at.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Iterable, Sequence

from ..config import PretrainConfig
from ..models import read_torch_file
from ..runtime.files import check_output_dir
from ..runtime.ownership import (MARKER, FolderLock, NotOwnedError, claim, foreign_entries, os_error_text,
                                 read_marker, remove_owned, set_state)

__all__ = ["RUN_FILES", "WRITER", "RunFolder", "check_fresh_out", "checkpoint_position", "interrupted_message",
           "resume_argv"]

#: The files and folders a pretraining run writes in OUT (its temporary files included).
RUN_FILES = ("last.pt", "last.prev.pt", "last.pt.tmp", "config.yaml", "metrics.jsonl", "metrics.jsonl.tmp",
             "summary.json", "bad_files.txt", "tensorboard")
#: the command a run's files are listed under in the marker (other commands never write over them)
WRITER = "pretrain"
#: where ``--overwrite`` keeps the old run until the new one's first checkpoint
ASIDE = ".replaced"
_CHECKPOINTS = ("last.pt", "last.prev.pt")


def _has_checkpoint(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _CHECKPOINTS)


def _replacing(out: Path) -> dict | None:
    """The replacement under way in ``out`` (``{"aside", "phase", "files"}``), or None."""
    return ((read_marker(out) or {}).get("state") or {}).get("replacing")


def _held_run(out: Path) -> list[str]:
    """The checkpoints of the run ``out`` holds (one moved aside by an unfinished ``--overwrite`` counts)."""
    held = [name for name in _CHECKPOINTS if (out / name).is_file()]
    replacing = _replacing(out)
    if not held and replacing:
        held = [f"{replacing['aside']}/{name}" for name in _CHECKPOINTS if (out / replacing["aside"] / name).is_file()]
    return held


def check_fresh_out(cfg: PretrainConfig) -> None:
    """Refuse an ``--out`` a run may not write: someone else's folder (files, no marker), an index, or (without
    ``--resume`` or ``--overwrite``) a folder whose run has a checkpoint. Reads only: it runs on every rank.

    Raises:
        NotOwnedError: a folder contrastkit did not write, or an index folder.
        ValueError: ``OUT`` holds a run, naming the options that continue it, start elsewhere or replace it.
    """
    out = Path(cfg.out).expanduser()
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder for the run")
    marker = read_marker(out)
    if marker is None:
        foreign = foreign_entries(out)
        if foreign and not (cfg.resume and (out / "last.pt").is_file()):  # a run of an older contrastkit resumes
            shown = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
            raise NotOwnedError(f"--out {out} holds files that contrastkit did not write ({shown}; no {MARKER}); "
                                f"a run never writes into or clears such a folder, with or without --overwrite: "
                                f"choose another --out")
        return
    if marker.get("kind") == "index":
        raise NotOwnedError(f"--out {out} is a contrastkit search index, not a run folder; choose another --out")
    unlisted = [n for n in RUN_FILES if (out / n).exists() and n not in marker["files"]]
    if unlisted and not cfg.resume:
        raise NotOwnedError(f"--out {out} holds {', '.join(unlisted)}, which contrastkit did not write (not listed "
                            f"in {out / MARKER}); a run never writes over them: choose another --out")
    if cfg.resume or cfg.overwrite:
        return
    held = _held_run(out)
    if held:
        raise ValueError(f"--out {out} already holds a run ({', '.join(held)}); continue it with --resume (--resume "
                         f"--extend to train it for more --epochs), choose another --out, or give --overwrite to "
                         f"replace it (the old run is kept until the new one's first checkpoint)")


class RunFolder:
    """Rank 0's hold on ``OUT`` while a run writes it: the writer lock, the marker, and the replacement of an old
    run by ``--overwrite``. :meth:`open` before anything is written; :meth:`prepare` when the run starts writing;
    :meth:`saved` after each checkpoint; :meth:`discard` when the run fails before its first checkpoint;
    :meth:`close` at the end.
    """

    def __init__(self, out: Path, lock: FolderLock, created: bool) -> None:
        self.out, self.lock, self.created = out, lock, created
        self.files: tuple[str, ...] = RUN_FILES
        self.marker_created = False
        self.replacing = False  # an old run waits in OUT/.replaced for this run's first checkpoint

    @classmethod
    def open(cls, cfg: PretrainConfig, extra_files: Iterable[str] = ()) -> "RunFolder":
        """Create ``OUT`` if needed, take its lock, finish or undo a replacement that a killed process left, and
        check (again, under the lock) that this run may write there.

        Raises:
            FolderBusyError: another process writes ``OUT``.
            NotOwnedError, ValueError: as :func:`check_fresh_out`; ``OUT`` cannot be created.
        """
        out = Path(cfg.out).expanduser()
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
            lock = FolderLock(out, "pretrain").acquire()
        except OSError as exc:
            raise ValueError(f"output folder {out} is not writable: {os_error_text(exc)}") from None
        folder = cls(out, lock, created)
        folder.files = (*RUN_FILES, *extra_files)
        try:
            folder.recover()
            check_fresh_out(cfg)
        except BaseException:
            folder.close(remove=created)
            raise
        return folder

    def prepare(self, fresh: bool) -> None:
        """List the run's files in the marker before it writes them, and check the folder takes checkpoints. A
        fresh run first moves an old run aside (``--overwrite``, checked) or removes the leftovers of a run that
        never saved a checkpoint."""
        self.marker_created = read_marker(self.out) is None
        if fresh and _has_checkpoint(self.out):
            self._move_aside()
        elif fresh:
            remove_owned(self.out, command=WRITER)
        claim(self.out, self.files, WRITER, kind="run")
        check_output_dir(self.out)

    def saved(self) -> None:
        """After a checkpoint is in place: the old run that ``--overwrite`` replaces goes now."""
        if self.replacing:
            self._commit()

    def discard(self) -> None:
        """After a fresh run failed or was stopped before its first checkpoint: remove what it wrote, put back
        the run it was replacing, and remove the marker and folder if this run created them."""
        if _has_checkpoint(self.out) and not self.replacing:
            return  # the run saved a checkpoint: it is kept whole
        remove_owned(self.out, command=WRITER)
        if self.replacing:
            self._rollback(moved=True)
        marker = read_marker(self.out)
        if self.marker_created and marker is not None and not marker["files"] and not marker.get("state"):
            (self.out / MARKER).unlink(missing_ok=True)

    def close(self, remove: bool = False) -> None:
        """Release the lock; with ``remove`` (this run created ``OUT``), remove the folder too if it is empty."""
        empty = remove and not [e for e in self.out.iterdir() if e.name != self.lock.path.name]
        self.lock.release(remove=empty or (self.lock.created and read_marker(self.out) is None))
        if empty:
            try:
                self.out.rmdir()
            except OSError:
                pass

    def recover(self) -> None:
        """Finish (a new checkpoint is in place) or undo (there is none) a replacement a killed process left."""
        replacing = _replacing(self.out)
        if not replacing:
            return
        if replacing["phase"] == "moved" and _has_checkpoint(self.out):
            self._commit()
            what = "removed the run it replaced"
        else:
            self._rollback(moved=replacing["phase"] == "moved")
            what = "put back the run it was replacing"
        print(f"note: {self.out}: a run started with --overwrite was stopped before it finished replacing the "
              f"old run; {what}", file=sys.stderr)

    def _move_aside(self) -> None:
        old = dict((read_marker(self.out) or {}).get("files") or {})
        aside = self.out / ASIDE
        if aside.exists():
            raise NotOwnedError(f"--out {self.out} holds {ASIDE}, which no replacement in progress explains; "
                                f"move it away to replace the run")
        set_state(self.out, "replacing", {"aside": ASIDE, "phase": "moving", "files": old})
        aside.mkdir()
        for name in old:
            if (self.out / name).exists() or (self.out / name).is_symlink():
                os.rename(self.out / name, aside / name)
        set_state(self.out, "replacing", {"aside": ASIDE, "phase": "moved", "files": old}, files={})
        self.replacing = True

    def _commit(self) -> None:
        replacing = _replacing(self.out)
        aside = self.out / replacing["aside"]
        for name in replacing["files"]:
            path = aside / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        _rmdir_if_empty(aside)
        set_state(self.out, "replacing", None)
        self.replacing = False

    def _rollback(self, moved: bool) -> None:
        replacing = _replacing(self.out)
        aside = self.out / replacing["aside"]
        if moved:  # what the new run wrote goes first (the old run's names are free again)
            remove_owned(self.out)
        back = {}
        for name, writer in replacing["files"].items():
            src, dst = aside / name, self.out / name
            if src.exists() or src.is_symlink():
                if dst.exists() or dst.is_symlink():
                    continue  # someone else's file took the name meanwhile: ours stays aside, unlisted here
                os.rename(src, dst)
            back[name] = writer
        set_state(self.out, "replacing", None, files={**(read_marker(self.out) or {}).get("files", {}), **back})
        _rmdir_if_empty(aside)
        self.replacing = False


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def checkpoint_position(path: str | os.PathLike) -> dict | None:
    """``{epoch, step_in_epoch, global_step, epochs}`` of the checkpoint at ``path``; None if there is none or
    it cannot be read. The weights are memory-mapped, not read."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = read_torch_file(path, mmap=True)
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
        if argv is not None:  # a run folder without a checkpoint takes the same command again
            again = [a for a in argv if a not in ("--resume", "--no-resume")]
            lines.append(f"start again with: {prefix} {shlex.join(again)}")
        return "\n".join(lines)
    where = (f"the end of epoch {pos['epoch']}" if pos["step_in_epoch"] == 0 else
             f"epoch {pos['epoch'] + 1}, step {pos['step_in_epoch']} in it")
    lines = [f"interrupted: {checkpoint} survives, saved at {where} of {pos['epochs']} (global step "
             f"{pos['global_step']}); steps after it are trained again on resume"]
    if argv is not None:
        lines.append(f"resume with: {prefix} {shlex.join(resume_argv(argv, overwrite_from_config))}")
    return "\n".join(lines)
