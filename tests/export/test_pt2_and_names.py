"""``--format pt2`` (torch.export), and the file-name rules: a reader is chosen by the name and checked against the
bytes, code-like archives run only under their own name, and export replaces only what it wrote."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from contrastkit import load_encoder
from contrastkit.cli import main
from contrastkit.export import ExportError, export_checkpoint
from export_checkpoints import features, rel_diff


def _batch(side: int, n: int) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(side + n))


def test_pt2_takes_any_batch_and_size_through_torch_export_load(tiny_ckpt, tmp_path):
    out = tmp_path / "enc.pt2"
    result = export_checkpoint(tiny_ckpt, "pt2", out, include_head=True)
    assert result["max_rel_diff"] <= 1e-4 and result["tolerance"] == 1e-4
    assert [[1, 3, 32, 32], [3, 3, 48, 48], [5, 3, 64, 64]] == result["verified_shapes"][2:]
    extra = {"contrastkit.json": ""}
    program = torch.export.load(str(out), extra_files=extra)  # as a user of torch.export would
    meta = json.loads(extra["contrastkit.json"])
    assert meta["export_format"] == "pt2" and meta["input_size"] == [3, 16, 16]
    assert meta["dynamic_axes"] == ["batch", "height", "width"]
    module = program.module()
    for n, side in ((7, 16), (2, 40)):
        x = _batch(side, n)
        h_ref, z_ref = features(tiny_ckpt, x)
        with torch.no_grad():
            h, z = module(x)
        assert rel_diff(h, h_ref) < 1e-4 and rel_diff(z, z_ref) < 1e-4
    encoder, transform = load_encoder(out)
    x = _batch(16, 3)
    with torch.no_grad():
        assert rel_diff(encoder(x), features(tiny_ckpt, x)[0]) < 1e-4
        assert rel_diff(encoder.forward_z(x), features(tiny_ckpt, x)[1]) < 1e-4
    assert not encoder.training and transform.transforms[0].size == 16


def test_code_like_archives_run_only_under_their_own_name(tiny_ckpt, tmp_path):
    for fmt, kind in (("pt2", "torch.export"), ("torchscript", "TorchScript")):
        out = tmp_path / f"enc.{fmt}"
        export_checkpoint(tiny_ckpt, fmt, out)
        disguised = tmp_path / f"{fmt}_as_weights.pt"
        shutil.copyfile(out, disguised)
        with pytest.raises(ExportError, match=rf"is a {kind} archive, which holds code: load_encoder runs one only "
                                              rf"from a file named \*\.{fmt}"):
            load_encoder(disguised)


def test_a_reader_is_chosen_by_the_name_and_checked_against_the_bytes(tiny_ckpt, tmp_path):
    pytest.importorskip("safetensors")
    export_checkpoint(tiny_ckpt, "safetensors", tmp_path / "enc.safetensors")
    export_checkpoint(tiny_ckpt, "torchscript", tmp_path / "enc.torchscript")
    cases = {"x.onnx": ("enc.safetensors", r"named \.onnx but is not an ONNX model"),
             "x.pt2": ("enc.torchscript", r"named \.pt2 but is not a torch.export archive"),
             "x.torchscript": ("enc.safetensors", r"named \.torchscript but is not a TorchScript archive"),
             "x.safetensors": ("enc.torchscript", r"named \.safetensors but has no safetensors header")}
    for name, (source, message) in cases.items():
        shutil.copyfile(tmp_path / source, tmp_path / name)
        with pytest.raises(ExportError, match=message):
            load_encoder(tmp_path / name)


def test_pt2_of_an_imagenet_stem_at_32_px_takes_any_batch_at_its_size(stock_ckpt, tmp_path):
    """Its last feature map is 1 x 1, a size torch.export fixes: the program takes any batch at 32 px (ONNX keeps
    all three axes)."""
    result = export_checkpoint(stock_ckpt, "pt2", tmp_path / "enc.pt2")
    assert result["max_rel_diff"] <= 1e-4 and result["verified_shapes"] == [[4, 3, 32, 32], [1, 3, 32, 32]]
    encoder, _ = load_encoder(tmp_path / "enc.pt2")
    x = _batch(32, 3)
    with torch.no_grad():
        assert rel_diff(encoder(x), features(stock_ckpt, x)[0]) < 1e-4
    extra = {"contrastkit.json": ""}
    torch.export.load(str(tmp_path / "enc.pt2"), extra_files=extra)
    assert json.loads(extra["contrastkit.json"])["dynamic_axes"] == ["batch"]


def test_export_names_the_file_for_its_format(tiny_ckpt, stock_ckpt, tmp_path):
    with pytest.raises(ExportError, match=r"--format pt2 writes a file named \*\.pt2 .*got --out"):
        export_checkpoint(tiny_ckpt, "pt2", tmp_path / "enc.pt")
    with pytest.raises(ExportError, match=r"--format torchvision writes a torch.save state_dict, but .* ends in "
                                          r"\.onnx"):
        export_checkpoint(stock_ckpt, "torchvision", tmp_path / "enc.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_its_own_file_but_never_a_user_s(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "enc.pt2"
    out.write_bytes(b"a user's own file")
    assert main(["export", "--checkpoint", str(tiny_ckpt), "--format", "pt2", "--out", str(out)]) == 2
    assert "exists and was not written by contrastkit" in capsys.readouterr().err
    assert out.read_bytes() == b"a user's own file" and sorted(p.name for p in tmp_path.iterdir()) == ["enc.pt2"]
    out.unlink()
    export_checkpoint(tiny_ckpt, "pt2", out)
    first = out.stat().st_ino
    export_checkpoint(tiny_ckpt, "pt2", out, overwrite=True)  # its own export: replaced by a new file
    visible = sorted(p.name for p in tmp_path.iterdir() if p.name[0] != ".")
    assert out.stat().st_ino != first and visible == ["enc.pt2"]
