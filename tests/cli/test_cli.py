"""CLI smoke tests on a tiny synthetic ImageFolder: pretrain each method, resume, eval, embed."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from conftest import TINY
from contrastkit.runtime import allocator
from contrastkit.cli import build_parser, main
from contrastkit.models import load_checkpoint


def _pretrain(tmp_path, folder, method, *extra):
    out = tmp_path / f"run_{method}"
    rc = main(["pretrain", "--method", method, "--data", str(folder), "--epochs", "1", "--out", str(out),
               *TINY, *extra])
    assert rc == 0
    return out


@pytest.mark.parametrize("method", ["simclr", "supcon", "ce"])
def test_pretrain_each_method_writes_outputs(tmp_path, image_folder, method, capsys):
    out = _pretrain(tmp_path, image_folder, method)
    for name in ("config.yaml", "last.pt", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["method"] == method and summary["global_step"] == 3  # 36 images / 12
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epoch_rows = [r for r in rows if r["kind"] == "epoch"]
    assert len(epoch_rows) == 1 and 0.0 <= epoch_rows[0]["knn_top1"] <= 1.0
    assert np.isfinite(epoch_rows[0]["loss"])


def test_cpu_step_settings_are_reported_and_bf16_is_applied(tmp_path, image_folder):
    """channels_last is on for a CPU run and reported; --precision bf16 really trains under bf16 autocast, where
    fp32 does not (what auto picks on a CPU: tests/train/test_precision_auto.py)."""
    tiny = [a if a != "0.125" else "0.25" for a in TINY]  # 16 channels: wide enough for channels_last on a CPU
    common = ["--method", "simclr", "--data", str(image_folder), "--epochs", "1", *tiny, "--knn-every", "0",
              "--augment-on", "device"]
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert main(["pretrain", *common, "--precision", precision, "--out", str(out)]) == 0
        runs[precision] = (json.loads((out / "summary.json").read_text()), load_checkpoint(out / "last.pt"))
    fp32, bf16 = runs["fp32"][0], runs["bf16"][0]
    assert (fp32["precision"], fp32["channels_last"], fp32["compiled"]) == ("fp32", True, False)
    if sys.platform.startswith("linux") and allocator._user_choice() is None:  # --malloc auto on a CPU run
        assert fp32["malloc"].startswith("tuned"), fp32["malloc"]
    assert bf16["precision"] == "bf16" and np.isfinite(bf16["final_loss"])
    assert bf16["final_loss"] != fp32["final_loss"]  # same seed and data: only the arithmetic differs
    weights = [k for k, v in runs["fp32"][1]["model"].items() if v.is_floating_point()]
    assert any(not torch.equal(runs["fp32"][1]["model"][k], runs["bf16"][1]["model"][k]) for k in weights)
    assert all(runs["bf16"][1]["model"][k].dtype == torch.float32 for k in weights)  # master weights stay fp32


@pytest.mark.parametrize("augment_on", ["workers", "device"])
def test_resume_mid_epoch_is_bit_exact(tmp_path, image_folder, augment_on):
    """Stopped mid-epoch 2 (step 4 of 6) and resumed == the uninterrupted run, bit for bit."""
    common = ["--method", "simclr", "--data", str(image_folder), "--epochs", "2", *TINY,
              "--augment-on", augment_on, "--knn-every", "0"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["pretrain", *common, "--out", str(full)]) == 0
    assert main(["pretrain", *common, "--out", str(part), "--max-steps", "4"]) == 0
    state = load_checkpoint(part / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 1, 4)
    assert main(["pretrain", "--out", str(part), "--resume", "--max-steps", "0"]) == 0  # the run's other options
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    assert a["global_step"] == b["global_step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    # the resumed epoch's mean loss covers all its steps, the ones before the stop included
    assert a["history"][-1]["loss"] == pytest.approx(b["history"][-1]["loss"], rel=1e-6)


def test_resume_takes_the_runs_options_and_names_what_differs(tmp_path, image_folder, capsys):
    """Issue 31: ``pretrain --out RUN --resume`` needs nothing retyped; a flag given differently is named."""
    out = tmp_path / "run"
    assert main(["pretrain", "--method", "simclr", "--data", str(image_folder), "--epochs", "2", *TINY,
                 "--knn-every", "0", "--max-steps", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume", "--max-steps", "4", "--log-every", "1"]) == 0
    err = capsys.readouterr().err
    assert "note: resuming" in err and "--max-steps 4 (the run had 2)" in err and "--log-every 1 (the run had 10)" in err
    state = load_checkpoint(out / "last.pt")
    assert state["global_step"] == 4 and state["config"]["width"] == 0.125 and state["config"]["data"] == str(image_folder)
    rc = main(["pretrain", "--out", str(out), "--resume", "--epochs", "1"])  # a 2-epoch run, 1 epoch completed
    err = capsys.readouterr().err
    assert rc == 2 and "a new --epochs must be more than 1" in err and "add --extend" not in err


def test_resume_refuses_missing_or_different_run(tmp_path, image_folder, capsys):
    out = _pretrain(tmp_path, image_folder, "simclr")
    rc = main(["pretrain", "--method", "simclr", "--data", str(image_folder), "--epochs", "1",
               "--out", str(tmp_path / "other"), "--resume", *TINY])
    assert rc == 2 and "does not exist" in capsys.readouterr().err  # never a silent fresh start
    rc = main(["pretrain", "--method", "supcon", "--data", str(image_folder), "--epochs", "1", "--out", str(out),
               "--resume", *TINY])
    assert rc == 2 and "different run" in capsys.readouterr().err


def test_eval_knn_linear_and_embed(tmp_path, image_folder, capsys):
    out = _pretrain(tmp_path, image_folder, "simclr")
    capsys.readouterr()
    for protocol in ("knn", "linear", "retrieval"):
        epochs = ["--linear-epochs", "5"] if protocol == "linear" else []  # refused by the other protocols
        assert main(["eval", "--checkpoint", str(out / "last.pt"), "--protocol", protocol, "--device", "cpu",
                     "--num-workers", "0", *epochs]) == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert line["protocol"] == protocol
        assert (out / f"eval_{protocol}.json").is_file()
    knn = json.loads((out / "eval_knn.json").read_text())
    assert 0.0 <= knn["metrics"]["top1"] <= 1.0
    prefix = tmp_path / "emb"
    assert main(["embed", "--checkpoint", str(out / "last.pt"), "--out", str(prefix), "--device", "cpu",
                 "--num-workers", "0"]) == 0
    arr = np.load(str(prefix) + ".npy")
    assert arr.shape == (48, 64)  # every image: 3 classes x (12 train + 4 test); h of a width-0.125 ResNet-18 is 64-d


def test_config_file_and_flag_precedence(tmp_path, image_folder):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("temperature: 0.3\nepochs: 7\nbatch-size: 12\n")
    args = build_parser().parse_args(["pretrain", "--config", str(cfg_file), "--epochs", "2"])
    from contrastkit.cli import config_from_args

    cfg = config_from_args(args)
    assert cfg.temperature == 0.3 and cfg.epochs == 2 and cfg.batch_size == 12


@pytest.mark.parametrize("argv", [
    ["pretrain", "--epochs", "0"],
    ["pretrain", "--epochs", "-3"],
    ["pretrain", "--temperature", "0"],
    ["pretrain", "--encoder", "resnet19"],
    ["pretrain", "--data", "/no/such/folder"],
    ["pretrain", "--method", "bogus"],
    ["eval", "--checkpoint", "/no/such.pt"],
])
def test_bad_options_give_clear_errors(argv, tmp_path, capsys):
    try:
        rc = main([*argv, "--out", str(tmp_path / "o")] if argv[0] == "pretrain" else argv)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def test_preview_augment_writes_png(tmp_path, image_folder):
    out = tmp_path / "grid.png"
    assert main(["preview-augment", "--data", str(image_folder), "--out", str(out), "--images", "2",
                 "--views", "3"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(out) as grid:  # issue 31: cells of at least 96 px, a header row and the rows' class names
        width, height = grid.size
        pixels = grid.convert("L")
        assert width >= 4 * 96 and height >= 2 * 96
        label_column = [pixels.getpixel((x, y)) for x in range(0, 30) for y in range(16, height)]
        header = [pixels.getpixel((x, y)) for x in range(width) for y in range(0, 14)]
    assert min(label_column) < 100 and min(header) < 100  # dark text on the white margins


def test_recipe_applies_and_flags_override(tmp_path):
    from contrastkit.cli import config_from_args
    from contrastkit.recipes import RECIPES

    args = build_parser().parse_args(["pretrain", "--recipe", "cifar-budget", "--lr", "0.7"])
    cfg = config_from_args(args)
    assert cfg.temperature == RECIPES["cifar-budget"]["temperature"] and cfg.augment_on == "device"
    assert cfg.lr == 0.7
    with pytest.raises(ValueError, match="known recipes: cifar-budget"):
        config_from_args(build_parser().parse_args(["pretrain", "--recipe", "nope"]))


def test_eval_all_with_per_protocol_epochs(tmp_path, image_folder, capsys):
    out = _pretrain(tmp_path, image_folder, "simclr")
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--protocol", "all", "--device", "cpu",
                 "--num-workers", "0", "--linear-epochs", "2", "--finetune-epochs", "1", "--label-fraction",
                 "0.5"]) == 0
    combined = json.loads((out / "eval_all.json").read_text())
    assert set(combined["results"]) == {"knn", "linear", "finetune", "retrieval"}
    assert combined["results"]["linear"]["recipe"]["epochs"] == 2
    assert combined["results"]["finetune"]["recipe"]["epochs"] == 1
    assert (out / "eval_all.md").read_text().startswith("|")
    indices = json.loads((out / "eval_finetune_0.5_indices.json").read_text())
    assert len(indices) == 18  # half of each class's 12 training images


def test_eval_malloc_option_is_checked(tmp_path):
    from contrastkit.evaluate import evaluate_checkpoint

    with pytest.raises(ValueError, match="malloc must be auto or off, got 'always'"):
        evaluate_checkpoint(tmp_path / "last.pt", "knn", malloc="always")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--checkpoint", "x.pt", "--malloc", "always"])
