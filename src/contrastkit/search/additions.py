"""Files that a search adds to an index (near-duplicate vectors, content hashes, the near-duplicate space and its
calibration), written under the index's own rules (:mod:`.build`).

A search that computed something worth keeping takes the index's writer lock (the one ``contrastkit index``
holds, so it never writes while an update does), writes each new file under the next generation's name (listed
in the marker before it is created), and then replaces ``index.json``, which names them beside the files of the
current generation that stay. The files this replaces are removed only after that, so a reader that opened the
previous ``index.json`` finds its files, and a process killed at any point leaves one whole index.

When the index cannot be written (another process holds its lock, the folder is read-only, it is not
contrastkit's), the search still answers from what it computed, and :attr:`IndexAdditions.reason` says why
nothing was kept.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..runtime.ownership import FolderBusyError, FolderLock, NotOwnedError, claim, os_error_text, publish, \
    remove_owned
from .build import check_index_folder, sweep
from .index import ImageIndex, data_files

__all__ = ["IndexAdditions", "DUP_WORK"]

#: the work folder of shards while a search embeds near-duplicate vectors an index lacks (inside the index)
DUP_WORK = ".partial-dup"


class IndexAdditions:
    """Adding files to an index, as a context manager: entering takes the writer lock (or records why it cannot),
    and reloads the index if another process replaced it since it was loaded.

    Attributes:
        index: the index as it is now (use this one inside the block).
        reason: None when additions can be stored, else why not (in words).

    Args:
        index: a loaded index.
        store: False to keep nothing (no lock is taken).
    """

    def __init__(self, index: ImageIndex, store: bool = True) -> None:
        self.index = index
        self.reason: str | None = None if store else "not asked to store it"
        self._lock: FolderLock | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> "IndexAdditions":
        if self.reason is not None:
            return self
        root = self.index.root
        lock = FolderLock(root, "search", flag="--index")
        try:
            lock.acquire()
        except FolderBusyError:
            self.reason = "another contrastkit process is writing the index"
            return self
        except OSError as exc:
            self.reason = f"the index folder cannot be written ({os_error_text(exc)})"
            return self
        try:
            check_index_folder(root, "--index")
            now = json.loads((root / "index.json").read_text())
            if now.get("generation", 0) != self.index.generation or now.get("files") != self.index.info.get("files"):
                self.index = ImageIndex.load(root, backend=self.index.backend)
        except NotOwnedError as exc:
            lock.release()
            self.reason = str(exc)
            return self
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        return self

    @property
    def can_store(self) -> bool:
        return self._lock is not None

    def work_dir(self) -> Path:
        """A folder for embedding shards: ``INDEX/.partial-dup`` (listed) when storing, else a temporary folder that
        this object removes on exit."""
        if self.can_store:
            claim(self.index.root, [DUP_WORK], "search", "index")
            return self.index.root / DUP_WORK
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="contrastkit-dup-")
        return Path(self._scratch.name) / "work"

    def publish(self, writers: dict[str, Callable[[Path], None]], info: dict[str, Any]) -> None:
        """Write the data files ``writers`` names (key of :data:`contrastkit.search.index.DATA_KEYS` -> a function
        writing the file at the path given) under the next generation, and ``index.json`` with them and ``info``'s
        keys; then remove the files they replace. Nothing is written when :attr:`can_store` is False."""
        if not self.can_store:
            return
        root, old = self.index.root, self.index
        generation = old.generation + 1 if writers else old.generation
        names = data_files(generation, tuple(writers))
        claim(root, [*names.values(), "index.json", "index.json.tmp"], "search", "index")
        for key, write in writers.items():
            write(root / names[key])
        files = {**old.files, **names}
        new = {**old.info, **info, "generation": generation, "files": files}
        (root / "index.json.tmp").write_text(json.dumps(new, indent=2) + "\n")
        publish(root / "index.json.tmp", root / "index.json")
        self.index = ImageIndex(root, new, old.paths, old.vectors, old.backend)
        remove_owned(root, [DUP_WORK])
        sweep(root, files)

    def __exit__(self, *exc) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
        if self._lock is not None:
            if exc[0] is not None and issubclass(exc[0], Exception):  # an error leaves no work (an interrupt
                remove_owned(self.index.root, [DUP_WORK])  # keeps the shards for the same command again)
            self._lock.release()
            self._lock = None
