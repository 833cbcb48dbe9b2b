"""An unset batch size is lowered to fit a small training set, in one line; a given one that does not fit is
refused with a value that does (issue 31: the README's search example failed on folders under 256 images)."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import make_image_folder
from contrastkit.cli import main
from contrastkit.config import DEFAULT_BATCH_SIZE, PretrainConfig, fit_batch_size

# TINY without its --batch-size: the batch size is what these tests are about
_FAST = ["--encoder", "resnet18", "--width", "0.125", "--cifar-stem", "on", "--num-workers", "0", "--no-progress",
         "--knn-every", "0", "--size", "16", "--preset", "cifar", "--device", "cpu", "--max-steps", "1"]


@pytest.mark.parametrize("n_train, world, expected", [
    (12, 1, 8), (210, 1, 128), (255, 1, 128), (256, 1, 256), (50_000, 1, 256), (12, 2, 8), (7, 2, 4), (2, 1, 2),
])
def test_an_unset_batch_size_fits_the_data(n_train, world, expected):
    cfg, note = fit_batch_size(PretrainConfig(), n_train, world)
    assert cfg.batch_size == expected and cfg.batch_size <= n_train and cfg.batch_size % world == 0
    assert (note is None) == (expected == DEFAULT_BATCH_SIZE)
    if note:
        assert note.count("\n") == 0 and f"--batch-size {expected}" in note and f"({n_train} images)" in note


def test_a_given_batch_size_is_kept_or_refused_with_one_that_fits():
    cfg, note = fit_batch_size(PretrainConfig(batch_size=12), 12)
    assert cfg.batch_size == 12 and note is None
    with pytest.raises(ValueError, match=r"--batch-size 256 is larger than the training set \(210 images\); use "
                                         r"--batch-size 128 or less, or leave it out"):
        fit_batch_size(PretrainConfig(batch_size=256), 210)
    with pytest.raises(ValueError, match="must be divisible by the 3 processes"):
        fit_batch_size(PretrainConfig(batch_size=8), 100, world=3)
    with pytest.raises(ValueError, match="fewer than the 4 processes"):
        fit_batch_size(PretrainConfig(), 3, world=4)


def test_pretrain_lowers_an_unset_batch_size_and_says_so(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "photos", per_class=7, size=16, split=False)  # 21 images: 18 train, 3 test
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(folder), "--epochs", "1", "--out", str(out), *_FAST]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "--batch-size" in line]
    assert notes == ["note: --batch-size 16: the default, 256, is larger than the training set (18 images); give "
                     "--batch-size to choose another"]
    assert yaml.safe_load((out / "config.yaml").read_text())["batch_size"] == 16  # what the run trained with
    assert json.loads((out / "summary.json").read_text())["global_step"] == 1
    # the resume reads the chosen value back and says nothing more about it
    assert main(["pretrain", "--out", str(out), "--resume", "--device", "cpu", "--no-progress"]) == 0
    assert "--batch-size" not in capsys.readouterr().err


def test_an_unset_batch_size_with_a_queue_keeps_the_queue_a_multiple(tmp_path, capsys):
    """The power of two chosen keeps the default queue of 4,096 keys a multiple of batch x views."""
    folder = make_image_folder(tmp_path / "photos", per_class=10, size=16, split=False)
    out = tmp_path / "run"
    assert main(["pretrain", "--method", "simclr-queue", "--data", str(folder), "--epochs", "1", "--out", str(out),
                 *_FAST]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["batch_size"] == 16


def test_a_given_batch_size_too_large_is_refused_before_any_work(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "photos", per_class=7, size=16, split=False)
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(folder), "--epochs", "1", "--out", str(out), "--batch-size", "256",
                 *_FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("contrastkit pretrain: error: --batch-size 256 is larger than the training set (18 images); use "
                   "--batch-size 16 or less, or leave it out to have one chosen that fits")
    assert not out.exists()


def test_help_says_how_the_batch_size_is_chosen(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 256, lowered to fit a smaller training set)" in text
