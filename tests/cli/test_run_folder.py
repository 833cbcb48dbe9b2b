"""The run folder (issue 21, items 2 and 7): a second run is not started over a first one without --overwrite,
which clears the first one's outputs; --data folders are stored as absolute paths, so that later commands work
from any working folder."""
from __future__ import annotations

import json
import os

import numpy as np
import torch
import yaml

from contrastkit.cli import main
from contrastkit.data import resolve_data
from contrastkit.evaluate import export_embeddings
from contrastkit.models import load_checkpoint
from reliability._common import folder, pretrain_args  # noqa: F401  (folder: the fixture)


def test_a_second_run_into_a_run_folder_is_refused(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out)) == 0
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(pretrain_args(folder, out, "--seed", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("contrastkit pretrain: error: --out") and len(err.splitlines()) == 1
    for named in ("already holds a run", "last.pt", "--resume", "another --out", "--overwrite"):
        assert named in err, named
    assert (out / "last.pt").read_bytes() == before


def test_overwrite_clears_the_old_runs_outputs_and_keeps_other_files(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out)) == 0
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--protocol", "knn", "--device", "cpu",
                 "--num-workers", "0"]) == 0
    export_embeddings(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), None, out / "embeddings")
    (out / "notes.txt").write_text("mine")
    (out / "other.json").write_text("{}")
    assert (out / "eval_knn.json").is_file() and len(list((out / "tensorboard").iterdir())) >= 1
    first = load_checkpoint(out / "last.pt")["model"]
    capsys.readouterr()
    assert main(pretrain_args(folder, out, "--seed", "1", "--overwrite")) == 0
    assert not (out / "eval_knn.json").exists()
    assert not any((out / f"embeddings.{ext}").exists() for ext in ("npy", "csv", "json"))
    assert (out / "notes.txt").read_text() == "mine" and (out / "other.json").is_file()
    assert len(list((out / "tensorboard").iterdir())) == 1  # one run, one event file
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "step"] == [3]  # the new run's rows only (--log-every 10)
    second = load_checkpoint(out / "last.pt")
    assert second["config"]["seed"] == 1
    assert any(not torch.equal(v, first[k]) for k, v in second["model"].items() if v.is_floating_point())


def test_overwrite_and_extend_are_checked_against_resume(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out, "--resume", "--overwrite")) == 2
    assert "--overwrite" in capsys.readouterr().err and not out.exists()
    assert main(pretrain_args(folder, out, "--extend")) == 2
    err = capsys.readouterr().err
    assert "--extend" in err and "needs --resume" in err and not out.exists()


def test_relative_data_is_stored_absolute_and_eval_works_from_elsewhere(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rel = os.path.relpath(folder, tmp_path)  # "data"
    assert not os.path.isabs(rel)
    assert main(pretrain_args(rel, "run")) == 0
    absolute = str(folder.resolve())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"] == absolute
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["config"]["data"] == state["meta"]["data"] == absolute
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"] == absolute
    assert main(pretrain_args(rel, "run", "--resume")) == 0  # the same relative --data is the same run

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    checkpoint = str(tmp_path / "run" / "last.pt")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", checkpoint, "--protocol", "knn", "--device", "cpu",
                 "--num-workers", "0"]) == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "run" / "eval_knn.json").read_text())
    assert result["data"] == absolute and result["transfer"] is False
    prefix = elsewhere / "emb"
    assert main(["embed", "--checkpoint", checkpoint, "--out", str(prefix), "--device", "cpu",
                 "--num-workers", "0"]) == 0
    meta = json.loads((elsewhere / "emb.json").read_text())
    assert meta["data"] == absolute and np.load(elsewhere / "emb.npy").shape[0] == 18  # every image


def test_known_data_set_names_stay_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()  # a folder of that name does not shadow the data set
    assert resolve_data("digits") == "digits" and resolve_data("cifar10") == "cifar10"
    (tmp_path / "imgs").mkdir()
    assert resolve_data("imgs") == str(tmp_path / "imgs")
    assert resolve_data("missing/imgs") == "missing/imgs"  # as typed, for the error message
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data("~/imgs") == str(tmp_path / "imgs")
