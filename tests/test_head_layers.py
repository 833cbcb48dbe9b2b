"""--head-layers K: K - 1 Linear-BN-ReLU blocks then a Linear layer; K = 2 keeps today's head and its names."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TINY, make_image_folder
from contrastkit import build_model
from contrastkit.cli import main
from contrastkit.config import PretrainConfig
from contrastkit.models import ProjectionHead
from contrastkit.models import load_checkpoint_model
from contrastkit.models import load_checkpoint, save_checkpoint


def _pattern(head: ProjectionHead) -> list[type]:
    return [type(m) for m in head.net]


def test_two_layers_is_simclr_head_with_its_parameter_names():
    head = ProjectionHead(32, 16, 8)
    assert _pattern(head) == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert set(head.state_dict()) == {"net.0.weight", "net.1.weight", "net.1.bias", "net.1.running_mean",
                                      "net.1.running_var", "net.1.num_batches_tracked", "net.3.weight",
                                      "net.3.bias"}
    assert head.hidden_blocks == 1


def test_three_layers_repeat_the_block():
    head = ProjectionHead(32, 16, 8, layers=3)
    assert _pattern(head) == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert head.net[0].in_features == 32 and head.net[3].in_features == 16 and head.net[6].out_features == 8
    assert head.net[0].bias is None and head.net[3].bias is None  # BN follows: no bias, as in the 2-layer head
    assert head(torch.randn(5, 32)).shape == (5, 8)
    assert head.hidden_blocks == 2
    model = build_model("resnet18", cifar_stem=True, width=0.125, head_layers=3)
    assert model.head.num_layers == 3 and model(torch.randn(2, 3, 8, 8))[1].shape == (2, 128)


@pytest.mark.parametrize("kind, layers, match", [("mlp", 1, "must be >= 2 for the MLP head"),
                                                 ("linear", 3, "applies to --head mlp only"),
                                                 ("none", 3, "applies to --head mlp only")])
def test_bad_layer_counts_are_refused(kind, layers, match):
    with pytest.raises(ValueError, match=match):
        ProjectionHead(8, kind=kind, layers=layers)
    with pytest.raises(ValueError, match=match):
        PretrainConfig(head=kind, head_layers=layers).validate()
    with pytest.raises(TypeError, match="must be an integer"):
        ProjectionHead(8, layers=2.5)


def test_cli_refuses_bad_head_layers_in_one_line(tmp_path, capsys):
    rc = main(["pretrain", "--head-layers", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("contrastkit pretrain: error: --head-layers must be")


def test_pretrain_with_three_layers_and_old_checkpoints_load_as_two(tmp_path):
    folder = make_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(folder), "--epochs", "1", "--knn-every", "0", "--head-layers", "3",
                 "--out", str(out), *TINY]) == 0
    state = load_checkpoint(out / "last.pt")
    assert state["config"]["head_layers"] == 3 and "head.net.6.weight" in state["model"]
    model, _, cfg = load_checkpoint_model(out / "last.pt")
    assert cfg["head_layers"] == 3 and model.head.num_layers == 3

    # a checkpoint written before the option existed: no head_layers in its config, a 2-layer head
    two = tmp_path / "two"
    assert main(["pretrain", "--data", str(folder), "--epochs", "1", "--knn-every", "0", "--out", str(two),
                 *TINY]) == 0
    old = load_checkpoint(two / "last.pt")
    del old["config"]["head_layers"]
    save_checkpoint(old, two / "old.pt")
    model, _, cfg = load_checkpoint_model(two / "old.pt")
    assert "head_layers" not in cfg and model.head.num_layers == 2
