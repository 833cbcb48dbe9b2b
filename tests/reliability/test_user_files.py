"""Nothing a user made is lost (issue 25, items 1, 2 and 5, and the leftovers of killed runs): a failed start
removes only what it created; --overwrite keeps the old run until the new one's first checkpoint; a folder of
someone else's files is never written into or cleared; nothing writes over a run's checkpoint; every command
that writes a file refuses one it did not write, and replaces its own only with --overwrite."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from contrastkit.cli import main
from contrastkit.models import load_checkpoint
from contrastkit.runtime.ownership import MARKER, owned_files
from reliability._common import folder, pretrain_args  # noqa: F401  (folder: the fixture)


def _tree(path):
    """Every file under ``path`` with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _users_folder(path):
    path.mkdir()
    (path / "notes.txt").write_text("my notes")
    (path / "eval_results_table.md").write_text("| mine |")
    (path / "eval_2023.json").write_text('{"top1": 0.9}')
    for ext, text in (("json", '{"format_version": 1, "what": "h", "dim": 2, "count": 1}'), ("npy", "x"),
                      ("csv", "index,path,label\n")):
        (path / f"features.{ext}").write_text(text)
    return _tree(path)


def test_a_failed_start_deletes_nothing_of_the_users(tmp_path, capsys):
    out = tmp_path / "mine"
    before = _users_folder(out)
    assert main(["pretrain", "--data", str(tmp_path / "does-not-exist"), "--out", str(out)]) == 2
    assert _tree(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)
    err = capsys.readouterr().err
    assert "holds files that contrastkit did not write" in err and "choose another --out" in err


def test_a_failed_start_in_a_new_folder_leaves_no_folder(folder, tmp_path):
    out = tmp_path / "new" / "run"
    assert main(pretrain_args(tmp_path / "does-not-exist", out)) == 2
    assert not out.exists()
    (folder / "train" / "class_0" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main(pretrain_args(folder, out, "--augment-on", "workers")) == 2  # fails in its first batch
    assert not out.exists()


def test_overwrite_keeps_the_old_run_until_the_new_one_checkpoints(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out)) == 0
    assert main(["eval", "--checkpoint", str(out), "--protocol", "knn", "--device", "cpu", "--num-workers", "0"]) == 0
    before = _tree(out)
    (folder / "train" / "class_1" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # in the first epoch
    capsys.readouterr()
    assert main(pretrain_args(folder, out, "--seed", "1", "--overwrite", "--augment-on", "workers")) == 2
    assert "cannot read image file" in capsys.readouterr().err
    assert _tree(out) == before  # the old run, whole: checkpoint, metrics, tensorboard, its evaluation
    assert load_checkpoint(out / "last.pt")["config"]["seed"] == 0
    assert not (out / ".replaced").exists() and owned_files(out)["eval_knn.json"] == "eval"


def test_overwrite_replaces_the_run_and_its_evaluations_and_keeps_other_files(folder, tmp_path):
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out)) == 0
    assert main(["eval", "--checkpoint", str(out), "--protocol", "knn", "--device", "cpu", "--num-workers", "0"]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(pretrain_args(folder, out, "--seed", "1", "--overwrite")) == 0
    assert not (out / "eval_knn.json").exists() and (out / "notes.txt").read_text() == "mine"
    assert load_checkpoint(out / "last.pt")["config"]["seed"] == 1 and not (out / ".replaced").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "step"] == [3]  # the new run's rows only


def test_another_tools_folder_is_never_a_run_nor_cleared(folder, tmp_path, capsys):
    out = tmp_path / "other"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events.out").write_text("theirs")
    (out / "config.yaml").write_text("lr: 0.1\n")
    before = _tree(out)
    for extra in ((), ("--overwrite",), ("--resume",)):
        assert main(pretrain_args(folder, out, *extra)) == 2
        assert _tree(out) == before and not (out / MARKER).exists()
    assert "choose another --out" in capsys.readouterr().err


class _DieAtStep2(torch.nn.Module):
    """The real objective, but the process dies (as far as the run folder can tell) at the second step."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, outputs, labels):
        self.calls += 1
        if self.calls == 2:
            raise SystemExit(137)  # no clean-up of the run folder runs for it, as for SIGKILL
        return self.inner(outputs, labels)


def test_a_run_killed_before_its_first_checkpoint_restarts_with_the_same_command(folder, tmp_path, monkeypatch):
    from conftest import wrap_objective

    import contrastkit.train.trainer as trainer

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        wrap_objective(m, _DieAtStep2)
        m.setattr(trainer.RunFolder, "discard", lambda self: None)  # a killed process cleans nothing up
        with pytest.raises(SystemExit):
            main(pretrain_args(folder, out, "--log-every", "1"))
    assert not (out / "last.pt").exists() and (out / "metrics.jsonl").read_text()  # a step logged, no checkpoint
    assert main(pretrain_args(folder, out)) == 0  # no --overwrite, no --resume
    assert load_checkpoint(out / "last.pt")["global_step"] == 3


def test_eval_save_never_writes_over_a_runs_checkpoint(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out)) == 0
    assert main(pretrain_args(folder, out, "--resume", "--extend", "--epochs", "2")) == 0  # makes last.prev.pt
    before = _tree(out)
    capsys.readouterr()
    for target in ("last.pt", "last.prev.pt", "config.yaml"):
        assert main(["eval", "--checkpoint", str(out), "--protocol", "finetune", "--finetune-epochs", "1",
                     "--save", str(out / target), "--overwrite", "--device", "cpu", "--num-workers", "0"]) == 2
        err = capsys.readouterr().err
        assert ("nothing writes over a run's files" if target.endswith(".pt") else "is a *.pt file") in err
    assert _tree(out) == before
    assert main(pretrain_args(folder, out, "--resume", "--extend", "--epochs", "3")) == 0  # the run goes on


def test_eval_save_is_checked_before_fine_tuning(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out)) == 0
    capsys.readouterr()
    args = ["eval", "--checkpoint", str(out), "--protocol", "finetune", "--finetune-epochs", "1", "--device", "cpu",
            "--num-workers", "0"]
    assert main([*args, "--save", str(tmp_path)]) == 2  # a folder
    assert "is a folder; expected the path of the checkpoint file" in capsys.readouterr().err
    (tmp_path / "mine.pt").write_text("mine")
    assert main([*args, "--save", str(tmp_path / "mine.pt"), "--overwrite"]) == 2
    assert "was not written by contrastkit" in capsys.readouterr().err
    assert (tmp_path / "mine.pt").read_text() == "mine"
    assert main([*args, "--save", str(tmp_path / "ft.pt")]) == 0
    assert main([*args, "--save", str(tmp_path / "ft.pt")]) == 2  # its own file: only with --overwrite
    assert "add --overwrite" in capsys.readouterr().err
    assert main([*args, "--save", str(tmp_path / "ft.pt"), "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("command", ["embed", "export", "search", "preview-augment"])
def test_outputs_are_replaced_only_when_contrastkit_wrote_them_and_with_overwrite(command, folder, tmp_path,
                                                                                   capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(folder, run)) == 0
    cpu = ["--device", "cpu"]
    if command == "embed":
        target, args = tmp_path / "e.npy", ["embed", "--checkpoint", str(run), "--out", str(tmp_path / "e"),
                                             "--num-workers", "0", "--no-progress", *cpu]
    elif command == "export":
        target = tmp_path / "enc.safetensors"
        args = ["export", "--checkpoint", str(run), "--format", "safetensors", "--out", str(target)]
    elif command == "preview-augment":
        target = tmp_path / "grid.png"
        args = ["preview-augment", "--data", str(folder), "--out", str(target), "--images", "2", "--views", "2"]
    else:
        assert main(["index", "--checkpoint", str(run), "--images", str(folder), "--out", str(tmp_path / "idx"),
                     "--num-workers", "0", "--no-progress", *cpu]) == 0
        target, args = tmp_path / "pics" / "gallery.html", ["search", "--index", str(tmp_path / "idx"), "--query",
                                                            str(folder / "test"), "--k", "2", "--out",
                                                            str(tmp_path / "pics"), *cpu]
    target.parent.mkdir(exist_ok=True)
    target.write_text("the user's")
    assert main(args) == 2 and main([*args, "--overwrite"]) == 2
    assert "was not written by contrastkit" in capsys.readouterr().err and target.read_text() == "the user's"
    target.unlink()
    assert main(args) == 0
    first = target.read_bytes()
    assert main(args) == 2 and "add --overwrite" in capsys.readouterr().err and target.read_bytes() == first
    assert main([*args, "--overwrite"]) == 0 and target.is_file()


def test_load_embeddings_reads_the_previous_set_while_a_replacement_is_half_done(folder, tmp_path):
    from contrastkit.evaluate import export_embeddings, load_embeddings
    from contrastkit.runtime import ownership

    export_embeddings(torch.zeros(3, 2), torch.tensor([0, 1, 2]), ["a", "b", "c"], tmp_path / "e")
    real = ownership.os.replace
    calls = []

    def die_after_the_npy(src, dst):
        real(src, dst)
        calls.append(dst)
        if str(dst).endswith("e.npy"):
            raise KeyboardInterrupt  # the process dies here
    ownership.os.replace = die_after_the_npy
    try:
        with pytest.raises(KeyboardInterrupt):
            export_embeddings(torch.ones(2, 2), torch.tensor([0, 1]), ["x", "y"], tmp_path / "e", overwrite=True)
    finally:
        ownership.os.replace = real
    assert np.load(tmp_path / "e.npy").shape == (2, 2)  # the new matrix is in place, its .json is not
    loaded = load_embeddings(tmp_path / "e")
    assert loaded["features"].shape == (3, 2) and loaded["paths"] == ["a", "b", "c"]  # the previous set, whole
    (tmp_path / ".e.npy.old").unlink()  # without it the set is mixed, and refused
    with pytest.raises(ValueError, match="do not come from one run"):
        load_embeddings(tmp_path / "e")


def test_a_run_lists_its_files_in_its_marker(folder, tmp_path):
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out)) == 0
    listed = owned_files(out)
    assert {"last.pt", "config.yaml", "metrics.jsonl", "summary.json", "tensorboard"} <= set(listed)
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == load_checkpoint(out)["config"]["seed"]
