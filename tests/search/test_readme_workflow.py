"""The README's workflow: train on an unlabelled folder, embed it, index it and search it (issue 19, done-when)."""
from __future__ import annotations

import json

from conftest import TINY
from contrastkit.cli import main
from search._common import make_flat_folder

_FAST = [*TINY, "--batch-size", "4", "--size", "16", "--preset", "cifar", "--knn-every", "0", "--device", "cpu"]


def test_train_unlabelled_then_embed_index_search(tmp_path, capsys):
    photos = make_flat_folder(tmp_path / "photos", n=8, size=16)
    run = tmp_path / "runs" / "photos"
    assert main(["pretrain", "--method", "simclr", "--data", str(photos), "--epochs", "1", "--out", str(run),
                 *_FAST]) == 0
    cpu = ["--device", "cpu", "--num-workers", "0", "--no-progress"]
    assert main(["embed", "--checkpoint", str(run / "last.pt"), "--out", str(run / "emb"), *cpu]) == 0
    assert main(["index", "--checkpoint", str(run), "--images", str(photos), "--out", str(tmp_path / "p.index"),
                 *cpu]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "p.index"), "--query", str(photos / "img_003.png"), "--k", "3",
                 "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["neighbours"][0]["path"] == str(photos / "img_003.png")
    embedded = json.loads((run / "emb.json").read_text())
    assert embedded["count"] == 8 and embedded["split"] == "train" and embedded["classes"] == []
