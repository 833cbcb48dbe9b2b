"""Atomic, strictly loaded checkpoints.

Saving writes ``<path>.tmp``, flushes and fsyncs it, then renames it over
``<path>`` (an atomic replacement on POSIX file systems) and fsyncs the folder; the
previous good checkpoint is kept as ``<stem>.prev.pt``. A process killed at any
moment leaves a loadable ``last.pt`` (or, before the first save, none).

Everything stored is a tensor, a number, a string or a container of those, so
checkpoints load with ``torch.load(weights_only=True)``: loading runs no pickled code.
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "resolve_checkpoint", "rng_state", "set_rng_state", "CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not match the model."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically, keeping the previous file as ``*.prev.pt``.

    Raises:
        CheckpointError: the file could not be written (disk full, quota, I/O error); ``path``
            still holds the previous checkpoint and no temporary file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a failed write as RuntimeError
        try:
            tmp.unlink()
        except OSError:
            pass
        kept = f"{path} still holds the previous checkpoint" if path.exists() else "no checkpoint was written"
        raise CheckpointError(f"could not write checkpoint {path} ({type(exc).__name__}: {exc}); {kept}. "
                              f"Free disk space and resume with --resume.") from exc
    if path.exists():
        prev = path.with_name(path.stem + ".prev" + path.suffix)
        try:
            if prev.exists():
                prev.unlink()
            os.link(path, prev)
        except OSError:
            pass  # keeping a previous copy is best effort; the new file is still written atomically
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: the file itself, or a run folder's ``last.pt``.

    Raises:
        CheckpointError: the path does not exist, or is a folder without ``last.pt``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / "last.pt").is_file():
            raise CheckpointError(f"{path} is a folder without last.pt; expected a checkpoint file or a run folder "
                                  f"written by `contrastkit pretrain --out`")
        return path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def _unreadable(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` failed on ``path``, in words.

    PyTorch's advice to retry with ``weights_only=False`` is left out: for a file contrastkit wrote it is never the
    fix, and it would run the file's pickled code. The previous checkpoint is named only when it exists.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    size = path.stat().st_size
    if size == 0:
        why = "it is empty (0 bytes)"
    elif head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        why = f"it starts as a torch.save file, but its end is missing ({size} bytes)"
    elif not zipfile.is_zipfile(path):
        why = f"its {size} bytes are not a torch.save file (a zip archive); is it another kind of file?"
    elif isinstance(exc, pickle.UnpicklingError):
        why = ("it holds Python objects other than tensors, numbers, strings and containers, which contrastkit "
               "never writes (checkpoints are loaded with weights_only=True, running no pickled code)")
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        why = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    prev = path.with_name(path.stem + ".prev" + path.suffix)
    hint = f"; the previous checkpoint {prev} exists and may be intact" if prev.is_file() else ""
    return f"checkpoint {path} is corrupt or truncated: {why}{hint}"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file, or a run folder (its ``last.pt``).
        map_location: where tensors are loaded.

    Raises:
        CheckpointError: naming the file, when it is missing, empty, truncated, corrupt or not a contrastkit
            checkpoint.
    """
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, wrong file type
        raise CheckpointError(_unreadable(path, exc)) from exc
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a contrastkit checkpoint (expected keys 'model' and 'config')")
    return state


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and python, as tensors and lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
