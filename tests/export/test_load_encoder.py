"""load_encoder reads every export, a checkpoint and a run folder back as (encoder returning h, transform)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit import load_encoder
from contrastkit.data import EvalDataset, decode_to_array
from contrastkit.export import ExportError, export_checkpoint
from contrastkit.export.formats import sidecar_path
from export_checkpoints import MEAN, STD, features, rel_diff

FORMATS_OF_TINY = [("safetensors", "safetensors"), ("torchscript", None), ("onnx", "onnxruntime")]


def _images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (20 + 3 * i, 27, 3), dtype=np.uint8)) for i in range(n)]


def _check(encoder, transform, checkpoint, size: int, tol: float = 1e-4) -> None:
    assert not encoder.training
    x = torch.stack([transform(img) for img in _images()])  # (3, 3, size, size)
    assert x.shape == (3, 3, size, size)
    with torch.no_grad():
        h = encoder(x)
    assert rel_diff(h, features(checkpoint, x)[0]) < tol


@pytest.mark.parametrize("fmt,package", FORMATS_OF_TINY)
def test_load_encoder_reads_each_self_describing_export(fmt, package, tiny_ckpt, tmp_path):
    if package:
        pytest.importorskip(package)
    out = tmp_path / f"enc.{fmt}"
    export_checkpoint(tiny_ckpt, fmt, out, include_head=True)
    encoder, transform = load_encoder(out)
    _check(encoder, transform, tiny_ckpt, 16, tol=1e-3 if fmt == "onnx" else 1e-4)


def test_load_encoder_reads_a_state_dict_with_its_sidecar_and_refuses_one_without(stock_ckpt, tmp_path):
    out = tmp_path / "resnet18.pth"
    export_checkpoint(stock_ckpt, "torchvision", out)
    encoder, transform = load_encoder(out)
    _check(encoder, transform, stock_ckpt, 32)
    sidecar_path(out).unlink()
    with pytest.raises(ExportError, match=r"plain state_dict.*resnet18.pth.json that contrastkit export writes"):
        load_encoder(out)


def test_load_encoder_reads_a_timm_export(timm_ckpt, tmp_path):
    out = tmp_path / "resnet10t.pt"
    export_checkpoint(timm_ckpt, "timm", out)
    encoder, transform = load_encoder(out)
    _check(encoder, transform, timm_ckpt, 16)


def test_load_encoder_reads_a_checkpoint_and_a_run_folder(tiny_ckpt):
    for path in (tiny_ckpt, tiny_ckpt.parent):
        encoder, transform = load_encoder(path)
        _check(encoder, transform, tiny_ckpt, 16)


def test_the_transform_is_the_evaluation_preprocessing(tiny_ckpt):
    """Same tensors as contrastkit eval's decode-then-normalise path, on images of other shapes than 16x16."""
    images = _images() + [Image.fromarray(np.full((16, 16, 3), 200, np.uint8)), _images()[0].convert("L")]
    source = [(img.convert("RGB"), 0) for img in images]  # sources give RGB; the transform converts itself
    arrays = decode_to_array(source, 16)
    expected = EvalDataset(*arrays, mean=MEAN, std=STD)
    _, transform = load_encoder(tiny_ckpt)
    for i, img in enumerate(images):
        got = transform(img)
        assert torch.allclose(got, expected[i][0], atol=1e-5), i


def test_load_encoder_refuses_what_contrastkit_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ExportError, match="is not a contrastkit checkpoint or export"):
        load_encoder(tmp_path / "notes.txt")
    (tmp_path / "notes.safetensors").write_text("not a model")
    with pytest.raises(ExportError, match="is named .safetensors but has no safetensors header"):
        load_encoder(tmp_path / "notes.safetensors")
    with pytest.raises(ExportError, match="is read as format='onnx' but is not an ONNX model"):
        load_encoder(tmp_path / "notes.txt", format="onnx")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    with pytest.raises(ExportError, match="neither a contrastkit checkpoint .* nor a state_dict of tensors"):
        load_encoder(tmp_path / "dict.pt")
    with pytest.raises(ExportError, match="does not exist"):
        load_encoder(tmp_path / "missing.onnx")
    with pytest.raises(ExportError, match="folder without last.pt"):
        load_encoder(tmp_path)
