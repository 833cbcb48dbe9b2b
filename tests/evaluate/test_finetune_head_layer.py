"""eval --protocol finetune --from-head-layer L: fine-tuning starts from the output of the head's first L blocks."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, make_image_folder
from contrastkit import build_model
from contrastkit.cli import main
from contrastkit.evaluate import class_balanced_subset, dataset_labels, finetune


def _model(layers: int = 3):
    torch.manual_seed(0)
    # hidden width 24, not the encoder's 64: the classifier's input width tells h from a head layer
    return build_model("resnet18", cifar_stem=True, width=0.125, head_layers=layers, proj_hidden_dim=24)


def test_head_layer_one_feeds_the_first_block_and_trains_only_it(colour_images):
    train, test = colour_images(12, seed=0), colour_images(6, seed=1)
    idx = class_balanced_subset(dataset_labels(train), 0.5, seed=0)
    model = _model()
    before = {k: v.clone() for k, v in model.head.state_dict().items()}
    res = finetune(model, train, test, idx, num_classes=2, epochs=2, lr=0.05, batch_size=6, seed=0,
                   copy_encoder=False, return_model=True, head_layer=1)
    net = res["model"]
    assert net.from_head_layer == 1 and net.classifier.in_features == 24
    assert net.head.net[0] is model.head.net[0]  # in place: the network holds the head's own first block

    after = model.head.state_dict()
    assert not torch.equal(after["net.0.weight"], before["net.0.weight"])  # block 1 was fine-tuned
    assert not torch.equal(after["net.1.weight"], before["net.1.weight"])
    for name in ("net.3.weight", "net.4.weight", "net.4.running_mean", "net.6.weight", "net.6.bias"):
        assert torch.equal(after[name], before[name]), name  # block 2 and the output layer: untouched

    seen = []
    net.classifier.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    x = torch.stack([test[i][0] for i in range(4)])
    net.eval()
    model.eval()
    with torch.no_grad():
        net(x)
        h = model.encoder(x)
        expected = model.head.net[2](model.head.net[1](model.head.net[0](h)))  # Linear-BN-ReLU of block 1
    assert torch.allclose(seen[0], expected, atol=1e-6)
    assert not torch.allclose(seen[0][:, :24], h[:, :24])


def test_head_layer_zero_is_h_and_out_of_range_is_refused(colour_images):
    train, test = colour_images(6, seed=0), colour_images(3, seed=1)
    model = _model()
    res = finetune(model, train, test, torch.arange(12), num_classes=2, epochs=1, batch_size=6, return_model=True)
    assert res["model"].from_head_layer == 0 and res["model"].classifier.in_features == 64
    with pytest.raises(ValueError, match=r"head layer 3 is out of range.*\[0, 2\]"):
        finetune(model, train, test, torch.arange(12), num_classes=2, epochs=1, head_layer=3)
    with pytest.raises(ValueError, match="needs a model with .encoder and .head"):
        finetune(model.encoder, train, test, torch.arange(12), num_classes=2, epochs=1, head_layer=1)
    linear = build_model("resnet18", cifar_stem=True, width=0.125, head="linear")
    with pytest.raises(ValueError, match="out of range"):
        finetune(linear, train, test, torch.arange(12), num_classes=2, epochs=1, head_layer=1)


def test_cli_from_head_layer_and_its_errors(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(folder), "--epochs", "1", "--knn-every", "0", "--head-layers", "3",
                 "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    ck = str(out / "last.pt")
    assert main(["eval", "--checkpoint", ck, "--protocol", "finetune", "--from-head-layer", "1",
                 "--finetune-epochs", "1", "--label-fraction", "0.5", "--device", "cpu", "--num-workers", "0"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["metrics"]["from_head_layer"] == 1 and 0 <= res["metrics"]["top1"] <= 1
    assert (out / "eval_finetune_0.5_layer1.json").is_file()
    for argv, match in ((["--protocol", "finetune", "--from-head-layer", "3"], "head layer 3 is out of range"),
                        (["--protocol", "knn", "--from-head-layer", "1"], "applies to --protocol finetune"),
                        (["--protocol", "finetune", "--from-head-layer", "-1"], "must be an integer >= 0")):
        assert main(["eval", "--checkpoint", ck, "--device", "cpu", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("contrastkit eval: error:") and match in err[0]
