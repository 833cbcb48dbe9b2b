"""Output folders: checking, before any work, that a folder can take what a command will write."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .ownership import os_error_text

__all__ = ["check_output_dir"]


def check_output_dir(out: str | os.PathLike, min_free_bytes: int = 200 * 2**20, what: str = "--out") -> Path:
    """Create ``out`` and prove it is writable with enough free space, before any training or evaluation.

    Raises:
        ValueError: ``out`` is a file, is not writable, or has less than ``min_free_bytes`` free.
    """
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file; expected a folder to write into")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:  # in words: no errno number, no name of the test file
        raise ValueError(f"output folder {path} is not writable: {os_error_text(exc)}") from None
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise ValueError(f"output folder {path} has only {free / 2**20:.0f} MiB free; "
                         f"checkpoints need at least {min_free_bytes / 2**20:.0f} MiB")
    return path
