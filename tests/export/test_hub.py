"""``--format hub``: a folder (model.safetensors, config.json, README.md) that another library loads from its
config and weights alone, and load_encoder reads back."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from contrastkit import load_encoder
from contrastkit.cli import main
from contrastkit.export import ExportError, export_checkpoint
from export_checkpoints import features, rel_diff

st = pytest.importorskip("safetensors.torch")


@pytest.fixture
def run_with_eval(tiny_ckpt, tmp_path):
    """The tiny checkpoint in a run folder, with an evaluation result beside it."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(tiny_ckpt, run / "last.pt")
    (run / "eval_knn.json").write_text(json.dumps({"protocol": "knn", "metrics": {"top1": 0.8125, "top5": 1.0},
                                                   "data": "toy", "transfer": False}))
    return run


def _resnet_from_config(config: dict) -> nn.Module:
    """What a torchvision user writes from config.json: ResNet with the stem and width it states."""
    blocks = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
              "resnet50": (Bottleneck, [3, 4, 6, 3])}
    block, layers = blocks[config["architecture"]]
    base = max(1, round(64 * config["width"]))
    model = ResNet(block, layers)
    model.inplanes = base
    cifar = config["stem"] == "cifar"
    model.conv1 = nn.Conv2d(3, base, 3 if cifar else 7, 1 if cifar else 2, 1 if cifar else 3, bias=False)
    model.bn1 = nn.BatchNorm2d(base)
    for i, n in enumerate(layers):
        setattr(model, f"layer{i + 1}", model._make_layer(block, base * 2 ** i, n, stride=1 if i == 0 else 2))
    if cifar:
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def test_hub_folder_loads_from_config_and_safetensors_alone(run_with_eval, tmp_path):
    out = tmp_path / "hub"
    result = export_checkpoint(run_with_eval, "hub", out)
    assert result["max_rel_diff"] <= 1e-4
    assert sorted(p.name for p in out.iterdir() if p.name[0] != ".") == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["stem"] == "cifar" and config["width"] == 0.125
    assert config["input_size"] == [3, 16, 16] and config["feature_dim"] == 64
    assert config["mean"] == [0.4, 0.45, 0.5] and config["std"] == [0.2, 0.25, 0.3] and config["head"] is None
    model = _resnet_from_config(config)
    model.load_state_dict(st.load_file(str(out / "model.safetensors")), strict=True)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))  # a normalised batch
    with torch.no_grad():
        assert rel_diff(model.eval()(x), features(run_with_eval / "last.pt", x)[0]) < 1e-4
    encoder, transform = load_encoder(out)
    with torch.no_grad():
        assert rel_diff(encoder(x), features(run_with_eval / "last.pt", x)[0]) < 1e-4
    assert transform.transforms[0].size == 16


def test_the_model_card_holds_data_recipe_steps_evaluation_and_loading(run_with_eval, tmp_path):
    out = tmp_path / "hub"
    export_checkpoint(run_with_eval, "hub", out)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: contrastkit\npipeline_tag: image-feature-extraction\n")
    for section in ("## Training data", "## Recipe", "## Training", "## Evaluation", "## How to load it"):
        assert section in card
    assert "`toy`" in card and "| method | simclr |" in card and "| width | 0.125 |" in card
    assert "| knn | top1 | 0.8125 |" in card and "optimiser steps" in card
    assert "load_encoder('THIS_FOLDER')" in card and "safetensors.torch.load_file('model.safetensors')" in card


def test_hub_export_replaces_its_own_folder_and_refuses_a_user_s(run_with_eval, tmp_path, capsys):
    out = tmp_path / "hub"
    out.mkdir()  # an empty folder: nothing to lose
    assert main(["export", "--checkpoint", str(run_with_eval), "--format", "hub", "--out", str(out),
                 "--include-head"]) == 0
    capsys.readouterr()
    assert "head.net.0.weight" in st.load_file(str(out / "model.safetensors"))
    with pytest.raises(ValueError, match="add --overwrite to replace it"):
        export_checkpoint(run_with_eval, "hub", out)
    export_checkpoint(run_with_eval, "hub", out, overwrite=True)  # its own files: replaced by the new ones
    assert "head.net.0.weight" not in st.load_file(str(out / "model.safetensors"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub", "run"]  # no temporary folder left
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"holds files that contrastkit export did not write \(notes.txt\)"):
        export_checkpoint(run_with_eval, "hub", out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ExportError, match="holds files that contrastkit export did not write"):
        export_checkpoint(run_with_eval, "hub", run_with_eval.parent)  # a folder of the user's
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file; --format hub writes a folder"):
        export_checkpoint(run_with_eval, "hub", tmp_path / "file")


def test_a_hub_folder_whose_weights_disagree_with_its_config_is_refused(run_with_eval, tmp_path):
    out = tmp_path / "hub"
    export_checkpoint(run_with_eval, "hub", out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "width": 0.25}))
    with pytest.raises(ExportError, match=r"config.json and model.safetensors describe different encoders \(width\)"):
        load_encoder(out)
