"""``eval --checkpoint EXPORT`` scores every export format as the checkpoint it came from is scored (knn, linear,
retrieval, through load_encoder); what an export cannot do, and ``distill --teacher EXPORT``, is refused in one
line naming what works (issue 31: eval called a TorchScript or ONNX export "corrupt or truncated")."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from contrastkit.cli import main
from contrastkit.evaluate import evaluate_checkpoint
from contrastkit.export import export_checkpoint
from contrastkit.export.formats import sidecar_path

_CPU = ["--device", "cpu", "--num-workers", "0"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Classes of noise with a faint class colour: hard enough for a random encoder that the metrics are not all
    1.0, so that two encoders agreeing on them says something."""
    root = tmp_path_factory.mktemp("evaldata") / "data"
    rng = np.random.default_rng(0)
    for part, n in (("train", 12), ("test", 8)):
        for c in range(3):
            (root / part / f"class_{c}").mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (16, 16, 3)).astype(np.float64)
                pixels[..., c] += 40
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / part / f"class_{c}" / f"{i}.png")
    return root


def _exported(checkpoint, fmt, out):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    export_checkpoint(checkpoint, fmt, out)
    return out


def _eval(path, folder, protocol="retrieval", **kw):
    return evaluate_checkpoint(path, protocol, data=str(folder), device="cpu", num_workers=0, **kw)


@pytest.mark.parametrize("fmt, name", [("safetensors", "e.safetensors"), ("torchscript", "e.torchscript"),
                                       ("pt2", "e.pt2"), ("hub", "hub"), ("onnx", "e.onnx")])
def test_an_export_scores_as_its_checkpoint(tiny_ckpt, folder, tmp_path, fmt, name):
    path = _exported(tiny_ckpt, fmt, tmp_path / name)
    for protocol in ("knn", "retrieval"):
        want = _eval(tiny_ckpt, folder, protocol, results_dir=tmp_path / "ckpt")["metrics"]
        got = _eval(path, folder, protocol)
        assert got["export_format"] == fmt and got["what"] == "h" and got["pretrained_on"] == "toy"
        if fmt == "onnx":  # onnxruntime's kernels round differently: the same up to float noise
            assert got["metrics"].keys() == want.keys()
            assert all(abs(got["metrics"][k] - v) < 1e-3 for k, v in want.items() if isinstance(v, float)), (got, want)
        else:
            assert got["metrics"] == want
    assert 0.0 < got["metrics"]["map@r"] < 1.0  # not a trivial agreement
    # the results go beside the export under a name of its own, never the checkpoint's eval_<protocol>.json
    written = json.loads((tmp_path / f"eval_retrieval_data_{name}.json").read_text())
    assert written["metrics"] == got["metrics"] or fmt == "onnx"
    assert not (tmp_path / "eval_retrieval_data.json").exists()


def test_a_torchvision_state_dict_with_its_sidecar_scores_as_its_checkpoint(stock_ckpt, folder, tmp_path, capsys):
    path = _exported(stock_ckpt, "torchvision", tmp_path / "resnet18.pt")
    want = _eval(stock_ckpt, folder, results_dir=tmp_path / "ckpt")["metrics"]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(path), "--protocol", "retrieval", "--data", str(folder), *_CPU]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["metrics"] == want and got["export_format"] == "torchvision"
    sidecar_path(path).unlink()  # without it, nothing says what the weights are: the message says where it was
    assert main(["eval", "--checkpoint", str(path), "--data", str(folder), *_CPU]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "resnet18.pt.json written beside it" in err and "corrupt" not in err


def test_the_linear_probe_runs_on_an_export(tiny_ckpt, folder, tmp_path, capsys):
    path = _exported(tiny_ckpt, "safetensors", tmp_path / "e.safetensors")
    assert main(["eval", "--checkpoint", str(path), "--protocol", "linear", "--linear-epochs", "2",
                 "--data", str(folder), "--results-dir", str(tmp_path / "results"), *_CPU]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= result["metrics"]["top1"] <= 1.0 and result["recipe"]["epochs"] == 2
    assert (tmp_path / "results" / "eval_linear_data_e.safetensors.json").is_file()


@pytest.mark.parametrize("argv, says", [
    (["--protocol", "finetune"], "--protocol finetune fine-tunes the trained network"),
    (["--protocol", "classifier"], "--protocol classifier scores a fine-tuned classifier"),
    (["--protocol", "all"], "--protocol all includes finetune"),
    (["--projection"], "it gives h, not z = g(h); leave --projection out"),
])
def test_what_an_export_cannot_do_is_refused_in_one_line(tiny_ckpt, folder, tmp_path, capsys, argv, says):
    path = _exported(tiny_ckpt, "torchscript", tmp_path / "e.torchscript")
    assert main(["eval", "--checkpoint", str(path), "--data", str(folder), *argv, *_CPU]) == 2
    out, err = capsys.readouterr()
    err = err.strip()
    assert err.startswith(f"contrastkit eval: error: {path} is an export (torchscript), the encoder f alone")
    assert says in err and "\n" not in err and "Warning" not in err and "corrupt" not in err
    if "--protocol" in argv:
        assert "knn, linear or retrieval" in err and "give the checkpoint it was exported from" in err
    assert not list(tmp_path.glob("eval_*"))


def test_an_export_that_does_not_name_its_data_needs_data(stock_ckpt, tmp_path, capsys):
    path = _exported(stock_ckpt, "torchvision", tmp_path / "resnet18.pt")
    meta = json.loads(sidecar_path(path).read_text())
    del meta["data"]
    sidecar_path(path).write_text(json.dumps(meta))
    assert main(["eval", "--checkpoint", str(path), *_CPU]) == 2
    assert capsys.readouterr().err.strip().endswith("does not say which data it was trained on: give --data")


@pytest.mark.parametrize("fmt, name", [("safetensors", "e.safetensors"), ("torchscript", "e.torchscript"),
                                       ("hub", "hub"), ("onnx", "e.onnx")])
def test_distill_refuses_an_export_as_teacher_naming_what_works(tiny_ckpt, folder, tmp_path, capsys, fmt, name):
    path = _exported(tiny_ckpt, fmt, tmp_path / name)
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(path), "--data", str(folder), "--out", str(out), "--epochs", "1",
                 *_CPU]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"contrastkit distill: error: --teacher {path} is an export ({fmt}), the encoder f alone")
    assert "'contrastkit eval --protocol finetune ... --save PATH'" in err and "\n" not in err
    assert not out.exists()
