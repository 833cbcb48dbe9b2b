"""The three commands of the README's "Tracking and sharing" run as written (on a tiny folder, one epoch)."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from conftest import TINY
from contrastkit import load_encoder
from contrastkit.cli import main
from contrastkit.models import load_checkpoint

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("## Tracking and sharing"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.startswith("contrastkit")]


def test_the_tracking_and_sharing_commands_run(tmp_path, image_folder, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    pytest.importorskip("onnxscript")
    monkeypatch.chdir(tmp_path)  # runs/ and MLflow's default store, mlflow.db, land here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    commands = _commands()
    assert [c[:2] for c in commands] == [["contrastkit", "pretrain"], ["contrastkit", "export"],
                                         ["contrastkit", "export"]]
    pretrain = commands[0][1:]
    pretrain[pretrain.index("--data") + 1] = str(image_folder)
    pretrain[pretrain.index("--epochs") + 1] = "1"
    assert main(pretrain + TINY) == 0
    for command in commands[1:]:
        assert main(command[1:]) == 0
    capsys.readouterr()
    assert (tmp_path / "mlflow.db").is_file()  # MLflow's default: a local SQLite file
    hub = tmp_path / "runs" / "tracked-hub"
    assert sorted(p.name for p in hub.iterdir() if p.name[0] != ".") == ["README.md", "config.json", "model.safetensors"]
    assert json.loads((hub / "config.json").read_text())["architecture"] == "resnet18"
    size = load_checkpoint(tmp_path / "runs" / "tracked")["meta"]["image_size"]
    for exported in (hub, tmp_path / "runs" / "tracked.onnx"):
        encoder, transform = load_encoder(exported)
        assert transform.transforms[0].size == size
