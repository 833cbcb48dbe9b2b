"""The pieces every writing command stands on (issue 25): the marker, the writer lock, replacing a set of files,
and names as data (contrastkit.runtime.ownership, contrastkit.runtime.text)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contrastkit.runtime.ownership import (LOCK, MARKER, FolderBusyError, FolderLock, NotOwnedError, OutputFiles,
                                          check_replaceable, claim, foreign_entries, owned_files, remove_owned)
from contrastkit.runtime.text import csv_cell, from_csv_cell, printable

_HOLD = """
import sys, time
from contrastkit.runtime.ownership import FolderLock
lock = FolderLock(sys.argv[1], "test-holder").acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(folder: Path) -> subprocess.Popen:
    """A process that takes the folder's lock and keeps it (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_at_once_naming_the_pid(tmp_path):
    proc = _holder(tmp_path)
    try:
        t0 = time.perf_counter()
        with pytest.raises(FolderBusyError, match=rf"another contrastkit process \(PID {proc.pid}, test-holder\)"):
            FolderLock(tmp_path, "second").acquire()
        assert time.perf_counter() - t0 < 1.0  # refused at once, not after a wait
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_a_killed_process_never_blocks(tmp_path):
    proc = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK).read_text().startswith(str(proc.pid))  # the file stays, with the dead PID
    with FolderLock(tmp_path, "next") as lock:
        assert lock.held and (tmp_path / LOCK).read_text().startswith(str(os.getpid()))


def test_only_listed_files_are_removed(tmp_path):
    (tmp_path / "mine.txt").write_text("user")
    claim(tmp_path, ["a.json", "sub"], "test", "results")
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x").write_text("x")
    assert foreign_entries(tmp_path) == ["mine.txt"]
    assert sorted(remove_owned(tmp_path, ["a.json", "mine.txt", "sub"])) == ["a.json", "sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER, "mine.txt"]
    assert owned_files(tmp_path) == {}


def test_check_replaceable(tmp_path):
    assert check_replaceable(tmp_path / "new.pt", overwrite=False) is False
    (tmp_path / "user.pt").write_text("x")
    with pytest.raises(NotOwnedError, match="was not written by contrastkit"):
        check_replaceable(tmp_path / "user.pt", overwrite=True)
    claim(tmp_path, ["ours.pt"], "export", "export")
    (tmp_path / "ours.pt").write_text("x")
    with pytest.raises(ValueError, match="add --overwrite"):
        check_replaceable(tmp_path / "ours.pt", overwrite=False)
    assert check_replaceable(tmp_path / "ours.pt", overwrite=True) is True
    claim(tmp_path, ["last.pt"], "pretrain", "run")
    (tmp_path / "last.pt").write_text("x")
    with pytest.raises(NotOwnedError, match="is a file of the run"):
        check_replaceable(tmp_path / "last.pt", overwrite=True)


def test_a_set_published_half_way_is_put_back_whole(tmp_path):
    names = ["e.npy", "e.json"]
    with OutputFiles(tmp_path, names, "test", "embeddings") as files:
        for n in names:
            files.temp(n).write_text("old " + n)
        files.publish()

    class Killed(BaseException):
        pass
    files = OutputFiles(tmp_path, names, "test", "embeddings", overwrite=True)
    files.__enter__()
    for n in names:
        files.temp(n).write_text("new " + n)
    real = os.replace

    def die_after_first(src, dst):
        real(src, dst)
        raise Killed
    os.replace = die_after_first
    try:
        with pytest.raises(Killed):
            files.publish()
    finally:
        os.replace = real
    files.lock.release()  # the process is gone: its lock with it
    assert (tmp_path / "e.npy").read_text() == "new e.npy" and (tmp_path / "e.json").read_text() == "old e.json"
    with OutputFiles(tmp_path, names, "test", "embeddings", overwrite=True) as files:  # the next run
        assert [(tmp_path / n).read_text() for n in names] == ["old e.npy", "old e.json"]  # whole again
        for n in names:
            files.temp(n).write_text("newer " + n)
        files.publish()
    assert [(tmp_path / n).read_text() for n in names] == ["newer e.npy", "newer e.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".old", ".tmp"))]


def test_a_failed_output_leaves_no_trace(tmp_path):
    folder = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with OutputFiles(folder, ["a.png"], "test", "search") as files:
            files.temp("a.png").write_text("half")
            raise RuntimeError("failed")
    assert not folder.exists()
    (tmp_path / "user.txt").write_text("x")
    with pytest.raises(RuntimeError):
        with OutputFiles(tmp_path, ["a.png"], "test", "search"):
            raise RuntimeError("failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user.txt"]


@pytest.mark.parametrize("name", ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "'quoted", "new\nline",
                                  "tab\tname", "esc\x1b[31mred", "back\\slash\\n", "plain/é/名.png", "\u2028sep"])
def test_names_in_csv_cells_are_text_and_read_back(name):
    cell = csv_cell(name)
    assert not cell.startswith(("=", "+", "-", "@")) and not any(ord(c) < 32 for c in cell)
    assert from_csv_cell(cell) == name


def test_printable_escapes_control_characters():
    assert printable("a\nb\x1b[2J") == "a\\nb\\x1b[2J"
    assert printable("line1\nline2\x07", keep_newlines=True) == "line1\nline2\\x07"
