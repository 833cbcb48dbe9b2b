"""One writer at a time (issue 25, item 4): a second writer of the same output is refused at once, naming the
PID that writes it, and the first one's output is whole. pretrain, index --update and embed are tested with two
real commands; the quick ones (export, search --out, eval --save, an experiment) against a process that holds
their lock, which is what a first command running there holds."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from contrastkit.cli import main
from contrastkit.models import load_checkpoint
from contrastkit.runtime.ownership import LOCK
from reliability._common import folder, pretrain_args  # noqa: F401  (folder: the fixture)

_CPU = ["--device", "cpu", "--num-workers", "0", "--no-progress"]


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "contrastkit", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_lock(lock: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until ``proc`` holds ``lock`` (its PID is written there once the lock is taken)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if lock.is_file() and lock.read_text().startswith(f"{proc.pid} "):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{proc.args} did not take {lock} in {timeout} s")


_HOLD = """
import sys, time
from contrastkit.runtime.ownership import FolderLock
FolderLock(sys.argv[1], "holder", name=sys.argv[2]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _hold(folder: Path, name: str = LOCK) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), name], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_two_pretrain_runs_into_one_out(folder, tmp_path, capsys):
    out = tmp_path / "run"
    first = _start(pretrain_args(folder, out, "--epochs", "1", epochs=4))
    _wait_for_lock(out / LOCK, first)
    assert main(pretrain_args(folder, out, "--seed", "7")) == 2
    err = capsys.readouterr().err
    assert f"being written by another contrastkit process (PID {first.pid}, pretrain)" in err
    assert first.wait(timeout=600) == 0, first.communicate()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]  # every line valid
    assert rows and all(r["kind"] in ("step", "epoch") for r in rows)
    assert load_checkpoint(out / "last.pt")["config"]["seed"] == yaml.safe_load((out / "config.yaml").read_text())[
        "seed"] == 0


def test_two_index_updates_of_one_index(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(folder, run)) == 0
    index = tmp_path / "idx"
    assert main(["index", "--checkpoint", str(run), "--images", str(folder / "test"), "--out", str(index),
                 *_CPU]) == 0
    first = _start(["index", "--out", str(index), "--update", "--images", str(folder), *_CPU])
    _wait_for_lock(index / LOCK, first)
    assert main(["index", "--out", str(index), "--update", "--images", str(folder), *_CPU]) == 2
    assert f"(PID {first.pid}, index)" in capsys.readouterr().err
    assert first.wait(timeout=600) == 0, first.communicate()
    summary = json.loads(first.stdout.read().strip().splitlines()[-1])
    assert summary["added"] == 12 and summary["count"] == 18  # train (12) added to test (6)
    assert main(["index", "--out", str(index), "--update", "--images", str(folder), *_CPU]) == 0  # in turn: fine


def test_two_embeds_into_one_out(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(folder, run)) == 0
    holder = _hold(tmp_path, ".e.npy.lock")
    try:
        assert main(["embed", "--checkpoint", str(run), "--out", str(tmp_path / "e"), *_CPU]) == 2
        assert f"(PID {holder.pid}, holder)" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "e.npy").exists()
    assert main(["embed", "--checkpoint", str(run), "--out", str(tmp_path / "e"), *_CPU]) == 0


@pytest.mark.parametrize("command", ["export", "search", "eval-save", "experiment"])
def test_a_second_writer_of_a_quick_output_is_refused(command, folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(folder, run)) == 0
    if command == "export":
        where, lock = tmp_path, ".enc.safetensors.lock"
        argv = ["export", "--checkpoint", str(run), "--format", "safetensors", "--out", str(tmp_path / "enc.safetensors")]
    elif command == "search":
        assert main(["index", "--checkpoint", str(run), "--images", str(folder), "--out", str(tmp_path / "idx"),
                     *_CPU]) == 0
        where, lock = tmp_path / "pics", ".gallery.html.lock"
        where.mkdir()
        argv = ["search", "--index", str(tmp_path / "idx"), "--query", str(folder / "test"), "--k", "2", "--out",
                str(where), "--device", "cpu"]
    elif command == "eval-save":
        where, lock = tmp_path, ".ft.pt.lock"
        argv = ["eval", "--checkpoint", str(run), "--protocol", "finetune", "--finetune-epochs", "1", "--save",
                str(tmp_path / "ft.pt"), "--device", "cpu", "--num-workers", "0"]
    else:
        where, lock = tmp_path / "exp", LOCK
        where.mkdir()
        argv = ["experiment", "losses", "--budget", "smoke", "--out", str(where), "--device", "cpu"]
    holder = _hold(where, lock)
    try:
        assert main(argv) == 2
        assert f"(PID {holder.pid}, holder)" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in where.iterdir() if not p.name.startswith(".")) == \
        (["data", "run"] if command in ("export", "eval-save") else [])
