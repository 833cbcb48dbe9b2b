"""Results are never thrown away (issue 31, item 5): eval prints its result whatever happens to its files and
writes it elsewhere with --results-dir; search --out and eval --save are checked before any work; write errors
name the file meant, in words (no errno, no temporary name)."""
from __future__ import annotations

import errno
import json

import pytest

import contrastkit.evaluate.results as results
from contrastkit.cli import main
from contrastkit.cli.common import error_text
from contrastkit.runtime.files import check_output_dir
from reliability._common import folder, pretrain_args  # noqa: F401  (folder: the fixture)

_EVAL = ["--protocol", "knn", "--device", "cpu", "--num-workers", "0"]


def test_a_read_only_run_folder_prints_the_result_and_results_dir_writes_it(folder, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(pretrain_args(folder, run)) == 0
    real = check_output_dir

    def read_only(path, *args, **kwargs):  # the test runs as root, whom chmod does not stop: the check says it
        if str(path) == str(run):
            raise ValueError(f"output folder {path} is not writable: read-only file system")
        return real(path, *args, **kwargs)
    monkeypatch.setattr(results, "check_output_dir", read_only)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), *_EVAL]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["protocol"] == "knn" and "--results-dir DIR" in captured.err
    assert not (run / "eval_knn.json").exists()
    assert main(["eval", "--checkpoint", str(run), *_EVAL, "--results-dir", str(tmp_path / "res")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "res" / "eval_knn.json").read_text())["metrics"] == printed["metrics"]
    (tmp_path / "blocker").write_text("x")
    assert main(["eval", "--checkpoint", str(run), *_EVAL, "--results-dir", str(tmp_path / "blocker" / "r")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "not writable" in captured.err  # refused before any work


def test_a_users_result_file_is_not_replaced(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(folder, run)) == 0
    (run / "eval_knn.json").write_text("mine")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), *_EVAL]) == 2
    assert "--results-dir" in capsys.readouterr().err and (run / "eval_knn.json").read_text() == "mine"


def test_search_out_is_checked_before_the_search(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(folder, run)) == 0
    assert main(["index", "--checkpoint", str(run), "--images", str(folder), "--out", str(tmp_path / "idx"),
                 "--device", "cpu", "--num-workers", "0", "--no-progress"]) == 0
    (tmp_path / "blocker").write_text("x")
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--query", str(folder / "test"), "--k", "2",
                 "--out", str(tmp_path / "blocker" / "pics"), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "is a file, not a folder" in captured.err


@pytest.mark.parametrize("name,shown", [(".e.npy.tmp", "cannot write {d}/e.npy: no space left on device"),
                                        (".last.pt.123.tmp", "cannot write {d}/last.pt: no space left on device"),
                                        ("notes.txt", "{d}/notes.txt: no space left on device")])
def test_write_errors_name_the_file_meant_in_words(name, shown, tmp_path):
    text = error_text(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / name)))
    assert text == shown.format(d=tmp_path) and "Errno" not in text and ".tmp" not in text
