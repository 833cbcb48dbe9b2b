"""Where ``eval`` writes its results: ``eval_<protocol>[_<data>].json`` (and ``eval_all*.md``) beside the
checkpoint, or in ``--results-dir``; checked before any work.

Every result is printed whatever happens to its files. A result file is written atomically (a temporary file,
then a rename) and listed in the folder's marker (:mod:`contrastkit.runtime.ownership`): a rerun replaces its own
earlier result, never a file contrastkit did not write. When the checkpoint's folder cannot be written (a
read-only run), the result is only printed, and a note says how to write it elsewhere.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..runtime.files import check_output_dir
from ..runtime.ownership import NotOwnedError, claim, owned_files, publish

__all__ = ["ResultFiles"]

#: free space a results folder needs (the files are a few kB)
_MIN_FREE = 2**20


class ResultFiles:
    """The folder ``eval`` writes results to, or None (results printed only).

    Args:
        checkpoint: the checkpoint file evaluated (its folder is the default).
        results_dir: ``--results-dir``; must be writable when given.
    """

    def __init__(self, checkpoint: Path, results_dir: str | os.PathLike | None) -> None:
        if results_dir is not None:
            self.folder: Path | None = check_output_dir(results_dir, _MIN_FREE, what="--results-dir")
            return
        try:
            self.folder = check_output_dir(checkpoint.parent, _MIN_FREE, what="the checkpoint's folder")
        except ValueError as exc:
            self.folder = None
            print(f"note: {exc}; the result is printed only (--results-dir DIR writes it elsewhere)",
                  file=sys.stderr)

    def check(self, names: list[str]) -> None:
        """Before any work: refuse to write over result files that contrastkit did not write.

        Raises:
            NotOwnedError: naming the file.
        """
        if self.folder is None:
            return
        listed = owned_files(self.folder)
        for name in names:
            if (self.folder / name).exists() and name not in listed:
                raise NotOwnedError(f"{self.folder / name} exists and was not written by contrastkit (it is not "
                                    f"listed in the folder's .contrastkit.json); contrastkit never replaces it: "
                                    f"write the results elsewhere with --results-dir DIR")

    def write(self, name: str, text: str) -> Path | None:
        """Write ``text`` to ``name`` atomically (listed in the marker first); None when results are printed
        only."""
        if self.folder is None:
            return None
        path, tmp = self.folder / name, self.folder / f".{name}.tmp"
        claim(self.folder, [name, tmp.name], "eval", kind="results")
        tmp.write_text(text)
        publish(tmp, path)
        return path

    def write_json(self, name: str, obj: Any) -> Path | None:
        return self.write(name, json.dumps(obj, indent=2, default=float) + "\n")
