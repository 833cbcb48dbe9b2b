"""Each export format round-trips through its own library: the reloaded module gives contrastkit's h (and z)."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

from contrastkit import ProjectionHead
from contrastkit.export import ExportError, export_checkpoint
from contrastkit.export.formats import head_path, sidecar_path
from export_checkpoints import MEAN, STD, features, rel_diff


def _batch(size: int, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7))


def test_torchvision_state_dict_loads_strictly_into_torchvision(stock_ckpt, tmp_path, capsys):
    out = tmp_path / "resnet18.pt"
    result = export_checkpoint(stock_ckpt, "torchvision", out, include_head=True)
    assert result["max_rel_diff"] <= 1e-4 and out.is_file()
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = _batch(32)
    h_ref, z_ref = features(stock_ckpt, x)
    with torch.no_grad():
        h = model.eval()(x)
    assert rel_diff(h, h_ref) < 1e-4
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["architecture"] == "resnet18" and meta["stem"] == "imagenet" and meta["width"] == 1.0
    assert meta["input_size"] == [3, 32, 32] and meta["mean"] == MEAN and meta["std"] == STD
    head = ProjectionHead(512, meta["head"]["hidden_dim"], meta["head"]["out_dim"], kind=meta["head"]["kind"])
    head.load_state_dict(torch.load(head_path(out), weights_only=True), strict=True)
    with torch.no_grad():
        assert rel_diff(head.eval()(h), z_ref) < 1e-4


def test_torchvision_refuses_cifar_stem_and_width_with_lines_that_load_the_safetensors_export(tiny_ckpt, tmp_path):
    st = pytest.importorskip("safetensors.torch")
    out = tmp_path / "enc.pt"
    with pytest.raises(ExportError, match="cifar stem and width 0.125; formats that work: safetensors") as info:
        export_checkpoint(tiny_ckpt, "torchvision", out)
    assert list(tmp_path.iterdir()) == []
    message = str(info.value)
    assert "torchscript" in message and "onnx" in message
    lines = message.split("strict=True:\n", 1)[1]
    export_checkpoint(tiny_ckpt, "safetensors", tmp_path / "encoder.safetensors")
    namespace: dict = {}
    exec(lines.replace("'encoder.safetensors'", repr(str(tmp_path / "encoder.safetensors"))), namespace)
    model = namespace["model"]
    assert isinstance(model, torchvision.models.ResNet)
    x = _batch(16)
    with torch.no_grad():
        assert rel_diff(model.eval()(x), features(tiny_ckpt, x)[0]) < 1e-4
    assert set(model.state_dict()) == set(st.load_file(str(tmp_path / "encoder.safetensors")))


def test_safetensors_holds_torchvision_names_and_the_metadata(tiny_ckpt, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors import safe_open

    from contrastkit.config import PretrainConfig
    from contrastkit.models import create_encoder

    out = tmp_path / "enc.safetensors"
    export_checkpoint(tiny_ckpt, "safetensors", out, include_head=True)
    with safe_open(str(out), framework="pt") as f:
        names, pairs = set(f.keys()), f.metadata()
    backbone = {n for n in names if not n.startswith("head.")}
    assert backbone == set(create_encoder("resnet18", cifar_stem=True, width=0.125).backbone.state_dict())
    assert {"head.net.0.weight", "head.net.3.bias"} <= names
    assert pairs["architecture"] == "resnet18" and pairs["stem"] == "cifar" and json.loads(pairs["width"]) == 0.125
    assert json.loads(pairs["input_size"]) == [3, 16, 16] and json.loads(pairs["mean"]) == MEAN
    assert json.loads(pairs["std"]) == STD and json.loads(pairs["feature_dim"]) == 64
    assert pairs["contrastkit_version"] and pairs["format"] == "pt"
    assert PretrainConfig.from_dict(json.loads(pairs["config"])).width == 0.125


def test_torchscript_returns_h_and_z_for_any_batch(tiny_ckpt, tmp_path):
    out = tmp_path / "enc.torchscript"
    export_checkpoint(tiny_ckpt, "torchscript", out, include_head=True)
    module = torch.jit.load(str(out))
    x = _batch(16, n=5)
    h_ref, z_ref = features(tiny_ckpt, x)
    with torch.no_grad():
        assert rel_diff(module(x), h_ref) < 1e-4
        assert rel_diff(module.forward_z(x), z_ref) < 1e-4


def test_onnx_takes_any_batch_and_image_size_and_outputs_h_and_z(tiny_ckpt, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "enc.onnx"
    result = export_checkpoint(tiny_ckpt, "onnx", out, include_head=True)
    assert result["tolerance"] == 1e-4 and result["max_rel_diff"] <= 1e-4
    assert [1, 3, 32, 32] in result["verified_shapes"] and [5, 3, 64, 64] in result["verified_shapes"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.shape == ["batch", 3, "height", "width"]
    assert [o.name for o in session.get_outputs()] == ["h", "z"]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["contrastkit"])
    assert meta["input_size"] == [3, 16, 16] and meta["dynamic_axes"] == ["batch", "height", "width"]
    for n, side in ((5, 16), (2, 40), (7, 24)):  # sizes the self-check did not use, and a batch of 7
        x = _batch(side, n=n)
        h_ref, z_ref = features(tiny_ckpt, x)
        h, z = session.run(None, {"input": x.numpy()})
        assert rel_diff(torch.from_numpy(h), h_ref) < 1e-4 and rel_diff(torch.from_numpy(z), z_ref) < 1e-4


def test_timm_state_dict_loads_into_timm_create_model(timm_ckpt, tmp_path):
    import timm

    out = tmp_path / "resnet10t.pt"
    export_checkpoint(timm_ckpt, "timm", out)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = _batch(16)
    with torch.no_grad():
        assert rel_diff(model.eval()(x), features(timm_ckpt, x)[0]) < 1e-4
    assert not head_path(out).exists()


def test_formats_an_encoder_cannot_take_are_refused(timm_ckpt, stock_ckpt, tmp_path):
    with pytest.raises(ExportError, match="needs a torchvision ResNet, but this encoder is timm:resnet10t; "
                                          "formats that work: timm"):
        export_checkpoint(timm_ckpt, "torchvision", tmp_path / "a.pt")
    with pytest.raises(ExportError, match="needs a timm encoder .* formats that work: torchvision, safetensors"):
        export_checkpoint(stock_ckpt, "timm", tmp_path / "b.pt")
    with pytest.raises(ExportError, match="unknown export format 'keras'; known formats: torchvision, timm"):
        export_checkpoint(stock_ckpt, "keras", tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arch,width,stem", [(a, 0.125, s) for a in ("resnet18", "resnet34", "resnet50")
                                             for s in ("cifar", "imagenet")] + [("resnet34", 1.0, "cifar")])
def test_the_printed_torchvision_lines_build_contrastkit_s_layout(arch, width, stem):
    from contrastkit.models import create_encoder
    from contrastkit.export.torchvision_code import torchvision_build_lines

    namespace: dict = {}
    exec(torchvision_build_lines(arch, width, stem), namespace)
    ours = create_encoder(arch, cifar_stem=stem == "cifar", width=width).backbone
    assert {k: v.shape for k, v in namespace["model"].state_dict().items()} == \
        {k: v.shape for k, v in ours.state_dict().items()}
    assert type(namespace["model"].maxpool) is type(ours.maxpool)


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript"])
def test_a_three_layer_head_is_exported_whole(fmt, tmp_path):
    """SimCLRv2's 3-layer head (``--head-layers 3``): the metadata records K and the reloaded g gives z."""
    from export_checkpoints import make_checkpoint

    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    ckpt = make_checkpoint(tmp_path / "head3.pt", head_layers=3)
    out = tmp_path / f"enc.{fmt}"
    export_checkpoint(ckpt, fmt, out, include_head=True)  # verifies itself: z of the reloaded g within tolerance
    x = _batch(16, n=4)
    h_ref, z_ref = features(ckpt, x)
    if fmt == "torchscript":
        with torch.no_grad():
            assert rel_diff(torch.jit.load(str(out)).forward_z(x), z_ref) < 1e-4
    else:
        from contrastkit.export.rebuild import build_head
        from contrastkit.export.state_dicts import read_safetensors, split_head

        tensors, meta = read_safetensors(out)
        head = build_head(meta["head"])
        assert meta["head"]["layers"] == 3 and head.num_layers == 3
        head.load_state_dict(split_head(tensors)[1])
        with torch.no_grad():
            assert rel_diff(head.eval()(h_ref), z_ref) < 1e-4


def test_a_fine_tuned_network_exports_f_and_refuses_include_head(tmp_path):
    from contrastkit.models import build_model, load_checkpoint, save_finetuned
    from export_checkpoints import make_checkpoint

    pre = load_checkpoint(make_checkpoint(tmp_path / "head3.pt", head_layers=3))
    net = build_model(pre["config"], num_classes=3, image_size=16, head_layer=1)
    path = save_finetuned(tmp_path / "ft.pt", net, pre["config"], pre["meta"], ["a", "b", "c"],
                          {"kind": "finetune", "top1": 0.5})
    with pytest.raises(ExportError, match="fine-tuned network.*without --include-head.*--protocol classifier"):
        export_checkpoint(path, "torchscript", tmp_path / "x.torchscript", include_head=True)
    assert not (tmp_path / "x.torchscript").exists()
    export_checkpoint(path, "torchscript", tmp_path / "f.torchscript")
    x = _batch(16, n=2)
    with torch.no_grad():
        h = net.eval().encoder(x)
        assert rel_diff(torch.jit.load(str(tmp_path / "f.torchscript"))(x), h) < 1e-4
