"""`index`, `search` and `embed` read every export that `load_encoder` reads (issue 31 item 3)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contrastkit.cli import main
from contrastkit.export import export_checkpoint
from contrastkit.search import ImageIndex, build_index, load_frozen_encoder
from export_checkpoints import make_checkpoint
from search._common import make_flat_folder

_CPU = ["--device", "cpu", "--num-workers", "0", "--no-progress"]
#: format -> (file name, the package it needs); the tiny checkpoint exports to each
_TINY = {"safetensors": ("enc.safetensors", "safetensors"), "torchscript": ("enc.torchscript", None),
         "onnx": ("enc.onnx", "onnxruntime"), "pt2": ("enc.pt2", None), "hub": ("hub", "safetensors")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A tiny checkpoint, a folder of images, and the index the checkpoint builds of it (the reference)."""
    root = tmp_path_factory.mktemp("exports")
    checkpoint = make_checkpoint(root / "run" / "last.pt")
    folder = make_flat_folder(root / "photos", n=8)
    build_index(checkpoint, folder, root / "ref.index", device="cpu", num_workers=0, progress=False)
    return {"root": root, "checkpoint": checkpoint, "folder": folder, "ref": ImageIndex.load(root / "ref.index")}


def _export(tiny: dict, fmt: str) -> Path:
    name, package = _TINY[fmt]
    if package:
        pytest.importorskip(package)
    out = tiny["root"] / name
    if not out.exists():
        export_checkpoint(tiny["checkpoint"], fmt, out)
    return out


@pytest.mark.parametrize("fmt", list(_TINY))
def test_index_search_and_embed_take_an_export(fmt, tiny, tmp_path, capsys):
    export = _export(tiny, fmt)
    ref = tiny["ref"]
    out = tmp_path / "idx"
    assert main(["index", "--checkpoint", str(export), "--images", str(tiny["folder"]), "--out", str(out),
                 *_CPU]) == 0
    idx = ImageIndex.load(out)
    assert idx.info["checkpoint"] == str(export.resolve()) and idx.paths == ref.paths
    # the export's h are the checkpoint's (ONNX within its float tolerance)
    assert np.abs(np.asarray(idx.vectors) - np.asarray(ref.vectors)).max() < (1e-3 if fmt == "onnx" else 1e-4)
    assert np.abs(idx.dup_vectors() - ref.dup_vectors()).max() < (1e-3 if fmt == "onnx" else 1e-4)
    # the same weights under their own names have the checkpoint's fingerprint; an ONNX graph has its file's
    assert (idx.fingerprint == ref.fingerprint) == (fmt != "onnx")
    capsys.readouterr()
    query = tiny["folder"] / "img_003.png"
    assert main(["search", "--index", str(out), "--query", str(query), "--k", "3", "--json", "--device", "cpu"]) == 0
    neighbours = json.loads(capsys.readouterr().out)["results"][0]["neighbours"]
    assert len(neighbours) == 3 and all(-1.0 <= nb["similarity"] <= 1.0 + 1e-6 for nb in neighbours)
    # embed writes h of the folder through the export; it needs --data (an export does not record its data)
    assert main(["embed", "--checkpoint", str(export), "--out", str(tmp_path / "emb"), "--device", "cpu",
                 "--num-workers", "0", "--no-progress"]) == 2
    assert "pass --data" in capsys.readouterr().err
    assert main(["embed", "--checkpoint", str(export), "--data", str(tiny["folder"]), "--out", str(tmp_path / "emb"),
                 "--device", "cpu", "--num-workers", "0", "--no-progress"]) == 0
    h = np.load(tmp_path / "emb.npy")
    assert h.shape == (8, 64) and np.isfinite(h).all()


@pytest.mark.parametrize("fmt", ["safetensors", "onnx"])
def test_the_checkpoints_index_searched_through_its_export(fmt, tiny, capsys):
    """Same weights, same fingerprint: the export searches the checkpoint's index; an ONNX graph is another model
    to the index, and the refusal says how to search it."""
    export = _export(tiny, fmt)
    capsys.readouterr()
    rc = main(["search", "--index", str(tiny["ref"].root), "--query", str(tiny["folder"] / "img_001.png"), "--k", "2",
               "--checkpoint", str(export), "--device", "cpu"])
    err = capsys.readouterr().err
    if fmt == "onnx":
        assert rc == 2 and "is another model" in err and "--rebuild" in err
    else:
        assert rc == 0 and "another model" not in err and "in the index" in err  # the query is an indexed image


def test_a_state_dict_export_with_its_sidecar(tmp_path, capsys):
    """torchvision's format needs the ImageNet stem at width 1 (ResNet-18, 32 px)."""
    checkpoint = make_checkpoint(tmp_path / "run" / "last.pt", width=1.0, cifar_stem="off", size=32)
    export_checkpoint(checkpoint, "torchvision", tmp_path / "resnet18.pth")
    folder = make_flat_folder(tmp_path / "photos", n=4, size=40)
    assert main(["index", "--checkpoint", str(tmp_path / "resnet18.pth"), "--images", str(folder), "--out",
                 str(tmp_path / "idx"), *_CPU]) == 0
    assert ImageIndex.load(tmp_path / "idx").fingerprint == load_frozen_encoder(checkpoint).fingerprint
    (tmp_path / "resnet18.pth.json").unlink()
    capsys.readouterr()
    assert main(["index", "--checkpoint", str(tmp_path / "resnet18.pth"), "--images", str(folder), "--out",
                 str(tmp_path / "idx2"), *_CPU]) == 2
    assert "resnet18.pth.json that contrastkit export writes" in capsys.readouterr().err
    assert not (tmp_path / "idx2").exists()


def test_what_an_export_cannot_do_is_refused_with_the_way(tiny, tmp_path, capsys):
    export = _export(tiny, "safetensors")
    rc = main(["index", "--checkpoint", str(export), "--images", str(tiny["folder"]), "--out", str(tmp_path / "z"),
               "--projection", *_CPU])
    err = capsys.readouterr().err
    assert rc == 2 and "needs the projection head g" in err and "pass the checkpoint it was exported from" in err
    other = tmp_path / "notes.txt"
    other.write_text("not a model")
    rc = main(["index", "--checkpoint", str(other), "--images", str(tiny["folder"]), "--out", str(tmp_path / "n"),
               *_CPU])
    err = capsys.readouterr().err
    assert rc == 2 and "notes.txt" in err and "Traceback" not in err
    for made in ("z", "n"):
        assert not (tmp_path / made).exists()
