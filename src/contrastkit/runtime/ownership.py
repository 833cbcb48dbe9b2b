"""Folders contrastkit writes: what they hold, one writer at a time, and replacing a file without losing it.

Every folder a command writes (a run, an index, embeddings, an export, an experiment, search pictures) holds a
*marker*, ``.contrastkit.json``: what the folder is and each file contrastkit wrote there, with the command that
wrote it. Nothing is deleted or replaced unless the marker lists it. A folder that holds files but no marker is
someone else's and is never cleared; a file the marker does not list is never replaced.

One writer at a time: a command that writes a folder for a while (pretrain, index, embed, an experiment) holds
``fcntl.flock`` on ``.contrastkit.lock`` there for as long as it writes. A second writer is refused at once, with
the PID written in the lock file. The kernel releases the lock when its process ends, however it ends, so the lock
file a killed process leaves behind never blocks anyone.

Updates of the marker itself (``eval`` or ``export`` adding their files beside a run that is training) are
serialised by a brief ``flock`` on the folder, which does not conflict with the writer's lock. The marker is
replaced atomically (a temporary file, ``os.replace``), so a reader never sees half of one.

A name is *claimed* (listed) before its file is created, so a process killed at any moment leaves no file of its
own that the marker does not list; a listed name whose file is missing is harmless.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["MARKER", "LOCK", "FolderBusyError", "NotOwnedError", "FolderLock", "read_marker", "owned_files",
           "foreign_entries", "claim", "forget", "remove_owned", "set_state", "check_replaceable", "temp_beside",
           "publish", "fsync_dir", "os_error_text", "os_error_message", "PROTECTED_BY", "OutputFiles", "hold_folder", "backup_path"]

MARKER = ".contrastkit.json"
LOCK = ".contrastkit.lock"
_MARKER_TMP = ".contrastkit.json.tmp"
_FORMAT = 1
#: entries of a folder that are contrastkit's bookkeeping, not outputs (never listed, never foreign)
_BOOKKEEPING = (MARKER, LOCK, _MARKER_TMP)
#: files written by these commands are never replaced by another command (a run's checkpoints, its config)
PROTECTED_BY = ("pretrain",)


class FolderBusyError(ValueError):
    """Another process holds the folder's writer lock."""


class NotOwnedError(ValueError):
    """A folder or file that contrastkit did not write (or another kind of contrastkit folder)."""


def os_error_text(exc: OSError) -> str:
    """What an OS error means in words ("permission denied", "no space left on device"), without the errno
    number or the name of a temporary file."""
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc) or errno.errorcode.get(exc.errno or 0, type(exc).__name__)


_TEMPORARY = re.compile(r"^\.?(?P<name>.+?)(\.\d+)?(\.tmp)+(\.[A-Za-z0-9]+)?$")


def os_error_message(exc: OSError) -> str:
    """An OS error as a command line shows it: what failed, in words, on which file; a temporary file is named by
    the file it was to become (``[Errno 28] No space left on device: '.e.npy.tmp'`` reads ``cannot write e.npy:
    no space left on device``)."""
    if exc.filename is None:
        return os_error_text(exc)
    path = Path(os.fsdecode(exc.filename))
    match = _TEMPORARY.match(path.name)
    shown = path.with_name(match.group("name")) if match else path
    return f"cannot write {shown}: {os_error_text(exc)}" if match else f"{shown}: {os_error_text(exc)}"


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse a folder's fsync)."""
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


class FolderLock:
    """The writer lock of ``folder``: ``flock`` on ``folder/.contrastkit.lock``, which holds the owner's PID.

    Use as a context manager, or :meth:`acquire` / :meth:`release`. The folder must exist.

    Raises:
        FolderBusyError: on :meth:`acquire`, when another process holds it (naming its PID and command).
    """

    def __init__(self, folder: str | os.PathLike, command: str, flag: str = "--out", name: str = LOCK,
                 what: str | None = None) -> None:
        self.folder = Path(folder)
        self.command, self.flag, self.name = command, flag, name
        self.what = what or str(self.folder)  # what the message names as being written
        self._fd: int | None = None
        self.created = False

    @property
    def path(self) -> Path:
        return self.folder / self.name

    def acquire(self) -> "FolderLock":
        self.created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            pid, _, command = holder.partition(" ")
            raise FolderBusyError(f"{self.flag} {self.what} is being written by another contrastkit process "
                                  f"(PID {pid}{', ' + command if command else ''}); wait for it to finish, or "
                                  f"choose another {self.flag}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.command}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self, remove: bool = False) -> None:
        """Let go of the lock; with ``remove``, delete the lock file first (only when this process created the
        folder and is taking it away again)."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def _marker_mutex(folder: Path) -> Iterator[None]:
    """A brief exclusive ``flock`` on the folder itself, around a read-modify-write of its marker."""
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of ``folder`` (``{"contrastkit", "kind", "files": {name: command}, ...}``), or None when there is
    none or it cannot be read (a folder whose marker is damaged counts as someone else's)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), dict):
        return None
    return marker


def _write_marker(folder: Path, marker: dict) -> None:
    tmp = folder / _MARKER_TMP
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(marker, indent=1, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MARKER)
    fsync_dir(folder)


def owned_files(folder: str | os.PathLike) -> dict[str, str]:
    """The files the marker of ``folder`` lists, with the command that wrote each (empty without a marker)."""
    marker = read_marker(folder)
    return dict(marker["files"]) if marker else {}


def foreign_entries(folder: str | os.PathLike) -> list[str]:
    """The entries of ``folder`` that contrastkit did not write: everything but its bookkeeping when there is no
    marker, else what the marker does not list. Empty for a folder that does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    marker = read_marker(folder) or {"files": {}}
    hidden = set(_BOOKKEEPING) | set(marker["files"])
    aside = (marker.get("state") or {}).get("replacing", {}).get("aside")
    if aside:  # an old run moved aside while a new one replaces it (train/run_folder.py)
        hidden.add(aside)
    return sorted(e.name for e in folder.iterdir() if e.name not in hidden)


def claim(folder: str | os.PathLike, names: Iterable[str], command: str, kind: str) -> list[str]:
    """List ``names`` in the marker of ``folder`` as written by ``command`` (creating a marker of ``kind``);
    returns the names that were not listed before. Call before creating the files."""
    folder = Path(folder)
    with _marker_mutex(folder):
        marker = read_marker(folder) or {"contrastkit": _FORMAT, "kind": kind, "files": {}}
        new = [n for n in names if n not in marker["files"]]
        marker["files"].update({n: command for n in names})
        _write_marker(folder, marker)
    return new


def forget(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Take ``names`` off the marker of ``folder`` (their files are gone)."""
    folder = Path(folder)
    with _marker_mutex(folder):
        marker = read_marker(folder)
        if marker is None:
            return
        for name in names:
            marker["files"].pop(name, None)
        _write_marker(folder, marker)


def set_state(folder: str | os.PathLike, key: str, value: object, files: dict[str, str] | None = None) -> None:
    """Record ``state[key] = value`` in the marker (None removes it), and with ``files`` replace the list of files:
    one atomic write, for the steps of a replacement that must never be seen half done."""
    folder = Path(folder)
    with _marker_mutex(folder):
        marker = read_marker(folder)
        if marker is None:
            raise NotOwnedError(f"{folder} has no {MARKER}")
        state = dict(marker.get("state") or {})
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
        if state:
            marker["state"] = state
        else:
            marker.pop("state", None)
        if files is not None:
            marker["files"] = dict(files)
        _write_marker(folder, marker)


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_owned(folder: str | os.PathLike, names: Iterable[str] | None = None,
                 command: str | None = None) -> list[str]:
    """Delete files of ``folder`` that its marker lists (``names`` of them, or all; only those ``command`` wrote,
    when given) and take them off the marker; a name the marker does not list is left alone. Returns the names
    removed."""
    folder = Path(folder)
    listed = owned_files(folder)
    pick = [n for n in (listed if names is None else names) if n in listed]
    pick = [n for n in pick if command is None or listed[n] == command]
    for name in pick:
        _delete(folder / name)
    if pick:
        forget(folder, pick)
    return pick


def check_replaceable(path: str | os.PathLike, overwrite: bool, flag: str = "--out") -> bool:
    """Whether ``path`` may be written: it does not exist (False), or contrastkit wrote it, it is not a run's own
    file, and ``overwrite`` says to replace it (True).

    Raises:
        NotOwnedError: ``path`` exists and the marker of its folder does not list it, or lists it as a file of a
            run (a checkpoint: nothing ever writes over one).
        ValueError: ``path`` is a contrastkit output and ``overwrite`` is False.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_dir():
        raise NotOwnedError(f"{flag} {path} is a folder; expected the path of a file")
    writer = owned_files(path.parent).get(path.name)
    if writer is None:
        raise NotOwnedError(f"{flag} {path} exists and was not written by contrastkit (not listed in "
                            f"{path.parent / MARKER}); contrastkit never replaces it: choose another {flag}")
    if writer in PROTECTED_BY:
        raise NotOwnedError(f"{flag} {path} is a file of the run in {path.parent} (written by {writer}); nothing "
                            f"writes over a run's files: choose another {flag}")
    if not overwrite:
        raise ValueError(f"{flag} {path} exists (written by contrastkit {writer}); add --overwrite to replace it, "
                         f"or choose another {flag}")
    return True


def backup_path(path: str | os.PathLike) -> Path:
    """``.<name>.old`` beside ``path``: the file a multi-file publish replaces, kept until the set is whole
    (:class:`OutputFiles`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def temp_beside(path: str | os.PathLike) -> Path:
    """A temporary name in the folder of ``path`` (same file system: :func:`publish` renames it atomically)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def publish(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename the finished ``tmp`` onto ``final`` (atomic on POSIX) and make the rename durable."""
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


class OutputFiles:
    """Files that one command writes into a folder as a unit (an export and its sidecar, embed's three files,
    search's two pictures, a fine-tuned checkpoint): checked before any work, written beside, published together.

    On ``with`` entry: the folder is created if needed and proven writable; a lock beside the first file
    (``.<name>.lock``) refuses a second writer of the same files at once; each file is checked with
    :func:`check_replaceable` (an existing file must be contrastkit's, not a run's, and ``overwrite`` given); and
    the names, their temporary names and the lock are listed in the marker. Write each file to :meth:`temp`, then
    :meth:`publish`. On exit the temporary files go, and when nothing was published, whatever entry created (the
    marker, the folder) goes too. A temporary file a killed process left is listed, and the next run writes over it.

    Several files cannot be renamed at once, so :meth:`publish` first keeps each file it replaces as a hard link,
    ``.<name>.old`` (listed), and removes these once every file is in place. A process killed in between leaves
    them: the next entry puts them back, so the set is the previous one again, whole (and a reader can use them
    meanwhile, as :func:`contrastkit.evaluate.load_embeddings` does).

    Raises:
        FolderBusyError, NotOwnedError, ValueError: on entry, before any work.
    """

    def __init__(self, folder: str | os.PathLike, names: Iterable[str], command: str, kind: str,
                 overwrite: bool = False, flag: str = "--out", scratch: Iterable[str] = (),
                 keep: Iterable[str] = (), temp_keeps_suffix: bool = False) -> None:
        self.folder = Path(folder)
        self.temp_keeps_suffix = temp_keeps_suffix  # for writers that accept only their own suffix (torch.export)
        self.names = list(names)
        self.scratch = [*(self.temp(n).name for n in self.names), *scratch]  # temporary files, listed too
        self.keep = list(keep)  # work a failed run leaves for the next (embed's shards), listed too
        self.command, self.kind, self.overwrite, self.flag = command, kind, overwrite, flag
        self.lock = FolderLock(self.folder, command, flag, name=f".{self.names[0]}.lock",
                               what=str(self.folder / self.names[0]))
        self._created_folder = self._created_marker = self._published = False
        self._claimed: list[str] = []

    def temp(self, name: str) -> Path:
        """The temporary path of ``name`` (in the same folder, so that :meth:`publish` renames it atomically):
        ``.<name>.tmp``, or ``.<name>.tmp<suffix>`` when the temporary file must keep the suffix."""
        return self.folder / f".{name}.tmp{Path(name).suffix if self.temp_keeps_suffix else ''}"

    def backup(self, name: str) -> Path:
        """Where :meth:`publish` keeps the file ``name`` replaces until the whole set is in place."""
        return backup_path(self.folder / name)

    def __enter__(self) -> "OutputFiles":
        self._created_folder = not self.folder.exists()
        try:
            if self.folder.exists() and not self.folder.is_dir():
                raise NotADirectoryError
            self.folder.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except NotADirectoryError:
            raise ValueError(f"{self.flag} {self.folder / self.names[0]}: {self.folder} is a file, not a "
                             f"folder") from None
        except OSError as exc:
            self._remove_created_folder()
            raise ValueError(f"{self.flag} {self.folder / self.names[0]} cannot be written: "
                             f"{os_error_text(exc)}") from None
        self._created_marker = read_marker(self.folder) is None
        try:
            for name in self.names:
                check_replaceable(self.folder / name, self.overwrite, self.flag)
            listed = owned_files(self.folder)
            for name in self.keep:
                if (self.folder / name).exists() and name not in listed:
                    raise NotOwnedError(f"{self.folder / name} is in the way and was not written by contrastkit "
                                        f"(not listed in {self.folder / MARKER}); move it away, or choose another "
                                        f"{self.flag}")
            self._claimed = claim(self.folder, [*self.names, *self.scratch, *self.keep, self.lock.name,
                                                *(self.backup(n).name for n in self.names)], self.command, self.kind)
            self._restore()
        except BaseException:
            self._undo()
            raise
        return self

    def publish(self, names: Iterable[str] | None = None) -> None:
        """Rename the finished temporary files onto their names (in the order given: the file that makes the set
        complete last), keeping the files they replace until all are in place; then make that durable."""
        names = self.names if names is None else list(names)
        for name in names:
            if (self.folder / name).is_file():
                self.backup(name).unlink(missing_ok=True)
                try:
                    os.link(self.folder / name, self.backup(name))
                except OSError:
                    pass  # a file system without hard links: the renames below are still each atomic
        fsync_dir(self.folder)
        for name in names:
            os.replace(self.temp(name), self.folder / name)
            self._published = True
        fsync_dir(self.folder)
        for name in names:
            self.backup(name).unlink(missing_ok=True)

    def _restore(self) -> None:
        """Put back the files a publish that was killed half way was replacing (see the class docstring)."""
        backups = [n for n in self.names if self.backup(n).is_file()]
        for name in backups:
            os.replace(self.backup(name), self.folder / name)
        if backups:
            fsync_dir(self.folder)

    def __exit__(self, *exc) -> None:
        for name in self.scratch:
            (self.folder / name).unlink(missing_ok=True)
        if not self._published:
            self._undo()
        else:
            self.lock.release()

    def _undo(self) -> None:
        """Nothing was published: remove what entering created (the marker's new names, the marker, the folder),
        but the work that ``keep`` names, when there is some."""
        listed = owned_files(self.folder)
        kept = [n for n in self.keep if (self.folder / n).exists() and n in listed]
        drop_marker = self._created_marker and not kept
        if drop_marker:
            (self.folder / MARKER).unlink(missing_ok=True)
        elif self._claimed:  # a lock file that was there before stays (listed): it is an earlier run's
            forget(self.folder, [n for n in self._claimed if n not in kept and (n != self.lock.name
                                                                                 or self.lock.created)])
        self.lock.release(remove=self.lock.created)
        self._remove_created_folder()

    def _remove_created_folder(self) -> None:
        if self._created_folder:
            try:
                self.folder.rmdir()
            except OSError:
                pass


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike, command: str, kind: str, names: Iterable[str],
                flag: str = "--out") -> Iterator[Path]:
    """A folder that one command writes for a while (an experiment, the demo): created if needed, its writer lock
    held within, and ``names`` (the entries the command writes there) listed in its marker.

    A folder of other files without a marker is refused; one that holds only ``names`` (written by a contrastkit
    from before markers) is taken over. When the block fails and the folder was created for it and holds nothing
    else, it is removed.

    Raises:
        FolderBusyError: another process writes the folder.
        NotOwnedError: the folder holds files that contrastkit did not write.
        ValueError: it cannot be created or written.
    """
    folder = Path(folder).expanduser()
    names = list(names)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {folder} is a file; expected a folder")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(folder, command, flag).acquire()
    except OSError as exc:
        raise ValueError(f"{flag} {folder} cannot be written: {os_error_text(exc)}") from None
    ok = False
    try:
        if read_marker(folder) is None:
            foreign = [n for n in foreign_entries(folder) if n not in names]
            if foreign:
                raise NotOwnedError(f"{flag} {folder} holds files that contrastkit did not write "
                                    f"({', '.join(foreign[:4])}; no {MARKER}); choose another {flag}")
        claim(folder, names, command, kind)
        yield folder
        ok = True
    finally:
        empty = created and not ok and not [e for e in folder.iterdir() if e.name not in _BOOKKEEPING]
        if empty:
            (folder / MARKER).unlink(missing_ok=True)
        lock.release(remove=empty or (lock.created and read_marker(folder) is None))
        if empty:
            try:
                folder.rmdir()
            except OSError:
                pass
