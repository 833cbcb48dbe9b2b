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
    assert result["left_out"] == [str(photos / "img_003.png")]  # in the index: not its own neighbour
    assert str(photos / "img_003.png") not in [n["path"] for n in result["neighbours"]]
    embedded = json.loads((run / "emb.json").read_text())
    assert embedded["count"] == 8 and embedded["split"] == "train" and embedded["classes"] == []


def test_readme_search_python_example_runs(checkpoint, flat_folder, tmp_path, monkeypatch):
    """The README's Python lines, run as written in a folder laid out as they assume."""
    import re
    import shutil
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Search your own images"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(checkpoint.parent, tmp_path / "runs" / "photos")
    assert flat_folder == tmp_path / "photos"
    shutil.copy(flat_folder / "img_002.png", tmp_path / "me.jpg")  # PNG data named .jpg: read by content
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["results"][0]["left_out"] == [str(tmp_path / "photos" / "img_002.png")]  # the same pixels
    assert (tmp_path / "results" / "gallery.html").is_file() and isinstance(namespace["groups"], list)
