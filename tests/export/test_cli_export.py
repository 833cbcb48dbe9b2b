"""``contrastkit export`` end to end: a real (one-step) pretraining run folder to a verified export."""
from __future__ import annotations

import json

import pytest

from conftest import TINY
from contrastkit import load_encoder
from contrastkit.cli import main
from contrastkit.models import load_checkpoint


@pytest.mark.parametrize("method", ["simclr", "ce"])
def test_export_a_run_folder_from_the_command_line(method, tmp_path, image_folder, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", method, "--data", str(image_folder), "--epochs", "1", "--max-steps", "1",
                 "--knn-every", "0", "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    out = tmp_path / "exported" / "encoder.torchscript"
    assert main(["export", "--checkpoint", str(run), "--format", "torchscript", "--out", str(out),
                 "--include-head"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].startswith(f"wrote {out} (torchscript,") and "largest difference" in printed[0]
    summary = json.loads(printed[-1])
    assert summary["max_rel_diff"] <= summary["tolerance"] and summary["checkpoint"] == str(run / "last.pt")
    encoder, transform = load_encoder(out)
    assert hasattr(encoder, "forward_z")
    assert transform.transforms[0].size == load_checkpoint(run / "last.pt")["meta"]["image_size"]
