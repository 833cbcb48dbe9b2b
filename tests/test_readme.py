"""The README's Python API example runs as written."""
from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_runs():
    text = README.read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert torch.isfinite(namespace["loss"]) and torch.isfinite(namespace["supcon"])
    assert namespace["x1"].shape == (64, 3, 32, 32) and namespace["z1"].shape[0] == 64
    assert namespace["fast"].check_values is False


def _section_commands(title: str) -> list[list[str]]:
    """The ``contrastkit pretrain`` commands of a README section's bash block, continuation lines joined."""
    import shlex

    text = README.read_text()
    section = text[text.index(title):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("contrastkit pretrain")]


def test_queue_and_multilabel_commands_train(tmp_path):
    """The README's commands for the queue and multi-label methods train as written, on tiny stand-ins for their
    data (the flags appended after them only shrink the run: argparse takes the last value)."""
    from conftest import make_image_folder
    from contrastkit.cli import main

    commands = _section_commands("## A momentum queue, and multi-label SupCon")
    assert [c[c.index("--method") + 1] for c in commands] == ["simclr-queue", "supcon-queue", "supcon-multilabel"]
    folder = make_image_folder(tmp_path / "cifar10", per_class=4, size=16)
    photos = make_image_folder(tmp_path / "photos", per_class=4, size=16, split=False)
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = ["path,labels"]
    for i, image in enumerate(sorted(photos.rglob("*.png"))):
        image.rename(flat / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{'sea;sky' if i % 3 == 0 else 'sky' if i % 3 == 1 else ''}")
    (tmp_path / "photos.csv").write_text("\n".join(rows) + "\n")
    tiny = ["--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--encoder", "resnet18", "--width", "0.125",
            "--size", "16", "--preset", "cifar", "--num-workers", "0", "--no-progress", "--knn-every", "0",
            "--device", "cpu"]
    for argv in commands:
        argv = [{"~/.cache/contrastkit/cifar10": str(folder), "photos": str(flat),
                 "photos.csv": str(tmp_path / "photos.csv")}.get(a, a) for a in argv]
        argv = [str(tmp_path / a) if a.startswith("runs/") else a for a in argv]
        assert main([*argv, *tiny]) == 0, argv
