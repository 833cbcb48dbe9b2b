"""``--augment-on auto``: device (decode once, batched augmentation) for square images of one size that fit the
memory budget, per-image workers otherwise; the choice is in summary.json."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import TINY, make_image_folder
from contrastkit.cli import main
from contrastkit.data import load_dataset
from contrastkit.train.data import auto_device_budget, resolve_augment_on


def _mixed_folder(root, sizes):
    for i, (w, h) in enumerate(sizes):
        d = root / f"class_{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 40 * i, dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_built_in_and_uniform_folders_are_uniform(tmp_path):
    digits = load_dataset("digits")
    assert digits.uniform_size and digits.image_size == 32
    folder = load_dataset(str(make_image_folder(tmp_path / "a", per_class=3, size=20)))
    assert folder.uniform_size and folder.image_size == 20


@pytest.mark.parametrize("sizes", [[(20, 20), (24, 24)] * 3, [(20, 30)] * 6])
def test_mixed_or_non_square_folders_are_not_uniform(tmp_path, sizes):
    splits = load_dataset(str(_mixed_folder(tmp_path / "m", sizes)))
    assert not splits.uniform_size and splits.image_size == 20
    assert resolve_augment_on("auto", splits) == "workers"


def test_auto_picks_device_within_the_budget_and_workers_beyond(tmp_path):
    splits = load_dataset(str(make_image_folder(tmp_path / "a", per_class=4, size=16)))
    nbytes = len(splits.train) * 3 * 16 * 16
    assert resolve_augment_on("auto", splits, budget=nbytes) == "device"
    assert resolve_augment_on("auto", splits, budget=nbytes - 1) == "workers"
    assert resolve_augment_on("workers", splits, budget=10**12) == "workers"  # an explicit choice stands
    assert resolve_augment_on("device", splits, budget=0) == "device"
    assert 0 < auto_device_budget() <= 4 * 2**30


def test_the_budget_is_shared_by_the_processes_of_one_machine(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    one = auto_device_budget()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert auto_device_budget() == one // 8


@pytest.mark.parametrize("extra, want", [([], "device"), (["--augment-on", "workers"], "workers")])
def test_summary_records_the_path_taken(tmp_path, capsys, extra, want):
    folder = make_image_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(folder), "--epochs", "1", "--out", str(out), *TINY, "--batch-size", "6",
            "--size", "16", "--knn-every", "0", "--device", "cpu", *extra]
    assert main(args) == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["augment_on"] == want
