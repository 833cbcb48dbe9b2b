"""contrastkit distill: pretrain, fine-tune from head layer 1 and save, then distil on the training images."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, pretrain_head3
from contrastkit.cli import main
from contrastkit.models import load_checkpoint, load_checkpoint_model


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distill")
    folder, run = pretrain_head3(tmp)
    path = tmp / "teacher.pt"
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--protocol", "finetune", "--from-head-layer",
                 "1", "--finetune-epochs", "2", "--label-fraction", "0.5", "--save", str(path), "--device", "cpu",
                 "--num-workers", "0"]) == 0
    return folder, path


def test_self_distillation_writes_a_student_that_eval_loads(teacher, tmp_path, capsys):
    folder, path = teacher
    out = tmp_path / "d"
    capsys.readouterr()
    assert main(["distill", "--teacher", str(path), "--data", str(folder), "--out", str(out), "--epochs", "2",
                 "--knn-every", "0", "--distill-temperature", "2", *TINY]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["method"] == "distill" and summary["global_step"] == 6  # 36 images / 12, 2 epochs
    assert 0 <= summary["student_top1"] <= 1 and summary["teacher_top1"] is not None
    ck = load_checkpoint(out / "last.pt")
    assert {k.split(".")[0] for k in ck["model"]} == {"student"}  # the teacher is not in the run's checkpoint
    assert ck["config"]["n_views"] == 1 and ck["config"]["width"] == 0.125

    student, meta, _ = load_checkpoint_model(out / "student.pt")
    assert meta.kind == "finetuned" and student.from_head_layer == 0 and student.num_classes == 3
    assert meta.finetuned["result"]["kind"] == "distill" and meta.finetuned["result"]["top1"] == summary["student_top1"]
    assert meta.finetuned["classifier"]["classes"] == ["class_0", "class_1", "class_2"]
    in_run, run_meta, _ = load_checkpoint_model(out / "last.pt")  # the run's checkpoint loads as the same student
    assert run_meta.kind == "pretrain" and type(in_run) is type(student)
    assert all(torch.equal(a, b) for a, b in zip(in_run.state_dict().values(), student.state_dict().values()))
    assert main(["eval", "--checkpoint", str(out / "student.pt"), "--protocol", "classifier", "--device", "cpu",
                 "--num-workers", "0"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["metrics"]["top1"] == summary["student_top1"]


def test_distill_with_labelled_loss_and_a_smaller_student(teacher, tmp_path, capsys, monkeypatch):
    from contrastkit.losses import DistillationLoss

    folder, path = teacher
    seen = []
    original = DistillationLoss.forward

    def recording(self, s, t, labels=None):
        seen.append(None if labels is None else labels.clone())
        return original(self, s, t, labels)

    monkeypatch.setattr(DistillationLoss, "forward", recording)
    out = tmp_path / "small"
    args = [a for a in TINY if a not in ("0.125",)]
    args[args.index("--width") + 1:args.index("--width") + 1] = ["0.0625"]
    assert main(["distill", "--teacher", str(path), "--data", str(folder), "--out", str(out), "--epochs", "1",
                 "--knn-every", "0", "--labelled-weight", "0.5", "--student", "resnet18", *args]) == 0
    assert load_checkpoint(out / "last.pt")["config"]["width"] == 0.0625
    labels = seen[0]
    assert labels is not None and (labels == -1).any() and (labels >= 0).any()
    assert int((torch.cat(seen) >= 0).sum()) == 18  # the teacher's labelled half, each seen once


def test_distill_errors(teacher, tmp_path, capsys):
    folder, path = teacher
    cases = [
        ([], "--teacher FINETUNED.pt is required"),
        (["--teacher", str(tmp_path / "none.pt")], "does not exist"),
        (["--teacher", str(path), "--distill-temperature", "0"], "--distill-temperature must be"),
        (["--teacher", str(path), "--labelled-weight", "2"], "--labelled-weight must be in [0, 1]"),
        (["--teacher", str(path), "--size", "24"], "takes 32 px inputs"),
    ]
    for argv, match in cases:
        rc = main(["distill", "--data", str(folder), "--out", str(tmp_path / "o"), "--epochs", "1", *argv, *TINY])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("contrastkit distill: error:"), err
        assert match in err[0], err[0]
    rc = main(["pretrain", "--teacher", str(path), "--out", str(tmp_path / "p")])
    assert rc == 2 and "--teacher applies to distillation (--method distill) only" in capsys.readouterr().err
