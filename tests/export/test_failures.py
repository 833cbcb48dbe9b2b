"""Bad input and failed verification: a clear error, and nothing (not even a temporary file) left at --out."""
from __future__ import annotations

import sys

import pytest
import torch

from contrastkit.cli import main
from contrastkit.export import ExportError, export_checkpoint
from contrastkit.export import state_dicts
from contrastkit.models import CheckpointError


def test_an_export_that_does_not_match_contrastkit_fails_and_leaves_nothing(tiny_ckpt, tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    real = state_dicts.backbone_state_dict

    def off_by_a_little(source):
        tensors = real(source)
        tensors["layer4.1.bn2.bias"] = tensors["layer4.1.bn2.bias"] + 0.05
        return tensors

    monkeypatch.setattr(state_dicts, "backbone_state_dict", off_by_a_little)
    out = tmp_path / "enc.safetensors"
    with pytest.raises(ExportError, match=r"verification failed: .* differ from contrastkit's by .* nothing was "
                                          r"written at"):
        export_checkpoint(tiny_ckpt, "safetensors", out)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_keeps_the_previous_file(tiny_ckpt, tmp_path, monkeypatch):
    out = tmp_path / "enc.torchscript"
    export_checkpoint(tiny_ckpt, "torchscript", out)
    previous = out.read_bytes()

    def broken_writer(source, meta, paths):
        paths["main"].write_bytes(b"half")
        raise OSError("disk full")

    from contrastkit.export import exporter

    monkeypatch.setitem(exporter._WRITERS, "torchscript", (broken_writer, exporter._WRITERS["torchscript"][1]))
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(tiny_ckpt, "torchscript", out, overwrite=True)
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == [".contrastkit.json", ".enc.torchscript.lock",
                                                          "enc.torchscript"]


def test_not_a_contrastkit_checkpoint(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="is not a contrastkit checkpoint"):
        export_checkpoint(other, "torchscript", tmp_path / "x.torchscript")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pt is not a contrastkit checkpoint: checkpoints are zip"):
        export_checkpoint(tmp_path / "text.pt", "torchscript", tmp_path / "x.torchscript")
    with pytest.raises(CheckpointError, match="folder without last.pt"):
        export_checkpoint(tmp_path, "torchscript", tmp_path / "x.torchscript")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt", "text.pt"]


@pytest.mark.parametrize("fmt,module,extra", [("safetensors", "safetensors.torch", "safetensors"),
                                              ("onnx", "onnxruntime", "onnx")])
def test_a_missing_optional_package_names_the_extra(fmt, module, extra, tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(ExportError, match=rf"needs the optional package '{module}'.*pip install "
                                          rf"'contrastkit\[{extra}\]'"):
        export_checkpoint(tiny_ckpt, fmt, tmp_path / f"x.{fmt}")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_out_is_refused(tiny_ckpt, tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="a_file is a file, not a folder"):
        export_checkpoint(tiny_ckpt, "torchscript", tmp_path / "a_file" / "enc.torchscript")
    with pytest.raises(ExportError, match="is a folder; expected the path of the file"):
        export_checkpoint(tiny_ckpt, "torchscript", tmp_path)
    with pytest.raises(ExportError, match=r"--format torchscript writes a file named \*.torchscript"):
        export_checkpoint(tiny_ckpt, "torchscript", tmp_path / "enc.ts")
    before = tiny_ckpt.read_bytes()
    with pytest.raises(ValueError, match="was not written by contrastkit .* never replaces it"):
        export_checkpoint(tiny_ckpt, "torchvision", tiny_ckpt, overwrite=True)
    assert tiny_ckpt.read_bytes() == before


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    assert main(["export", "--checkpoint", str(tmp_path / "junk.pt"), "--format", "onnx",
                 "--out", str(tmp_path / "e.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("contrastkit export: error: ") and "is not a contrastkit checkpoint" in err
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt"]
