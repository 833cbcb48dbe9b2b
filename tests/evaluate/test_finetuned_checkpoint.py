"""eval --protocol finetune --save PATH: the fine-tuned network as a checkpoint that eval and embed load."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import pretrain_head3
from contrastkit.cli import main
from contrastkit.evaluate.classify import classifier_accuracy
from contrastkit.evaluate import evaluation_data
from contrastkit.methods.distill import load_teacher
from contrastkit.models import (FINETUNED_FORMAT, CheckpointError, FineTunedNetwork, load_checkpoint,
                                load_checkpoint_model)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft")
    folder, out = pretrain_head3(tmp)
    path = tmp / "ft" / "net.pt"
    return folder, out, path


def test_saved_checkpoint_reproduces_its_accuracy(saved, capsys):
    folder, out, path = saved
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--protocol", "finetune", "--from-head-layer", "1",
                 "--finetune-epochs", "2", "--label-fraction", "0.5", "--save", str(path), "--device", "cpu",
                 "--num-workers", "0"]) == 0
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reported["saved"] == str(path) and path.is_file()
    assert not list(path.parent.glob("*.tmp")) and not list(path.parent.glob("*.prev.pt"))

    state = load_checkpoint(path)
    assert state["format"] == FINETUNED_FORMAT and state["classifier"]["num_classes"] == 3
    assert state["classifier"]["classes"] == ["class_0", "class_1", "class_2"] == state["meta"]["classes"]
    assert state["classifier"]["from_head_layer"] == 1 and state["config"]["head_layers"] == 3
    assert state["result"]["top1"] == reported["metrics"]["top1"]
    assert len(state["result"]["indices"]) == reported["metrics"]["n_train"] == 18
    assert {k.split(".")[0] for k in state["model"]} == {"encoder", "head", "classifier"}
    assert "head.net.0.weight" in state["model"] and "head.net.3.weight" not in state["model"]

    net, meta, _ = load_checkpoint_model(path)
    assert isinstance(net, FineTunedNetwork) and not net.training and net.from_head_layer == 1
    data = evaluation_data(str(folder), meta.image_size, meta.mean, meta.std, num_workers=0)
    again = classifier_accuracy(net, data["test"], 3)
    assert again["top1"] == reported["metrics"]["top1"] and again["top5"] == reported["metrics"]["top5"]

    assert main(["eval", "--checkpoint", str(path), "--protocol", "classifier", "--device", "cpu",
                 "--num-workers", "0"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cli["metrics"]["top1"] == reported["metrics"]["top1"]


def test_saved_checkpoint_works_with_the_other_tools(saved, capsys):
    folder, out, path = saved
    if not path.is_file():
        pytest.skip("needs the checkpoint of the previous test")
    model, meta, cfg = load_checkpoint_model(path)  # what eval and embed call
    assert isinstance(model, FineTunedNetwork) and meta.finetuned["classifier"]["num_classes"] == 3
    base = load_checkpoint(out / "last.pt")["model"]
    trained = load_checkpoint(path)["model"]
    assert set(k for k in trained if k.startswith("encoder.")) == set(k for k in base if k.startswith("encoder."))
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(path), "--protocol", "knn", "--device", "cpu",
                 "--num-workers", "0"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out.strip().splitlines()[-1])["metrics"]["top1"] <= 1
    assert main(["embed", "--checkpoint", str(path), "--out", str(path.parent / "emb"), "--device", "cpu",
                 "--num-workers", "0"]) == 0
    assert (path.parent / "emb.npy").is_file()


def test_save_errors(saved, tmp_path, capsys):
    folder, out, _ = saved
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--protocol", "knn", "--save",
                 str(tmp_path / "x.pt"), "--device", "cpu"]) == 2
    assert "--save applies to --protocol finetune" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--protocol", "classifier", "--device", "cpu",
                 "--num-workers", "0"]) == 2
    assert "this is a pretraining checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="not a fine-tuned network"):
        load_teacher(out / "last.pt")
    assert not (tmp_path / "x.pt").exists()
