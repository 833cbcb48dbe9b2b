"""Bad data in a training folder (issue 6): grayscale, RGBA, palette and 16-bit images smaller than
the crop size train fine; an unreadable file stops the run naming it, or with --skip-bad-files is
skipped and counted in the summary, also when DataLoader workers (separate processes) read it.

(Loading-level checks: empty folders, empty class folders, mode conversion, the corrupt file named
or skipped in-process, are tests/data/test_sources.py.)
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
import pytest
from PIL import Image

from contrastkit.cli import main
from contrastkit.data import decode_to_array, load_dataset
from contrastkit.models import load_checkpoint
from reliability._common import all_finite, pretrain_args


@pytest.fixture
def messy_folder(tmp_path):
    """train/ 3 classes x 4 images of 8 px (crop 16: upsampled) in modes L, RGBA, P, I;16, and one
    corrupt file in class_1; test/ 3 x 1 RGB."""
    rng = np.random.default_rng(0)
    root = tmp_path / "messy"
    modes = ["L", "RGBA", "P", "I;16"]
    for c in range(3):
        for part, n in (("train", 4), ("test", 1)):
            d = root / part / f"class_{c}"
            d.mkdir(parents=True)
            for i in range(n):
                rgb = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
                rgb[..., c] = 255
                img = Image.fromarray(rgb)
                mode = modes[(c + i) % 4] if part == "train" else "RGB"
                if mode == "I;16":
                    img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
                elif mode != "RGB":
                    img = img.convert(mode)
                img.save(d / f"{i}.png")
    bad = root / "train" / "class_1" / "2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root, bad


@pytest.mark.parametrize("augment_on", ["workers", "device"])
def test_bad_file_skipped_and_counted_with_workers(messy_folder, tmp_path, capsys, monkeypatch, augment_on):
    monkeypatch.setenv("HOME", str(tmp_path))  # decoded-array caches go to ~/.cache: keep them here
    root, bad = messy_folder
    out = tmp_path / "run"
    assert main(pretrain_args(root, out, "--skip-bad-files", "--num-workers", "1",
                              "--augment-on", augment_on)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["skipped_bad_files"] == 1 and summary["global_step"] == 3
    assert (out / "bad_files.txt").read_text().split() == [str(bad)]
    assert all_finite(load_checkpoint(out / "last.pt")["model"])


def test_bad_file_stops_the_run_naming_it(messy_folder, tmp_path, capsys):
    root, bad = messy_folder
    assert main(pretrain_args(root, tmp_path / "run", "--num-workers", "1")) == 2
    err = capsys.readouterr().err
    assert f"error: cannot read image file {str(bad)!r}" in err
    assert "Traceback" not in err  # the worker's traceback is not shown, only its message


def test_decoded_array_cache_notices_changed_files(tmp_path):
    """A folder whose images were replaced is decoded again, not served from a stale cache."""
    from conftest import make_image_folder

    root = make_image_folder(tmp_path / "d", per_class=2, size=8, split=False)
    cache = str(tmp_path / "cache")
    first, _ = decode_to_array(load_dataset(str(root)).train, 8, cache_key=str(root), cache_dir=cache)
    path = load_dataset(str(root)).train.paths[0]
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    os.utime(path, ns=(1, 1))  # a different modification time even on coarse clocks
    again, _ = decode_to_array(load_dataset(str(root)).train, 8, cache_key=str(root), cache_dir=cache)
    assert not torch.equal(first, again) and again[0, :, 0, 0].tolist() == [1, 2, 3]
