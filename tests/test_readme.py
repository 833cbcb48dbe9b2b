"""Every command of the README runs as written from a fresh clone, on tiny data made here (issue 31).

The commands are read from the README's ``bash`` blocks, so a command added there is run here, or by the test
that holds its section, or is named below as run elsewhere: :func:`test_every_readme_command_is_held` fails
otherwise. Flags appended after a command only make the run smaller (argparse takes the last value): fewer steps,
a narrower encoder, the CPU. The data the commands name are made here as a user would have them: CIFAR-10 in
torchvision's on-disk format under ``~/.cache/contrastkit/datasets`` (``HOME`` is a temporary folder), folders of
images in the working folder.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import make_image_folder
from search._common import make_flat_folder
from torchvision_files import write_cifar

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: sections whose commands a test of their own extracts from this README and runs: (file, test function)
SECTION_TESTS = {
    "## A momentum queue, and multi-label SupCon": ("tests/test_readme.py", "test_queue_and_multilabel_commands_train"),
    "## Tracking and sharing": ("tests/tracking/test_readme_commands.py", "test_the_tracking_and_sharing_commands_run"),
}
#: commands run by another test (or that are the suite): command -> where
ELSEWHERE = {
    "make demo": "tests/test_demo.py::test_demo_writes_summary_and_plots (the demo for one epoch)",
    "make test": "the suite itself",
}
#: commands that need hardware this machine lacks: parsed (every flag exists), not run
GPU_ONLY = ("torchrun --nproc_per_node 8 ",)
#: the sections this file runs, command by command, each in a fresh clone's working folder
RUN_HERE = ("## Command line", "## Using the encoder elsewhere", "## Search your own images")

_SMALL = ["--epochs", "1", "--max-steps", "2", "--num-workers", "0", "--no-progress", "--knn-every", "0",
          "--device", "cpu"]
_CPU = ["--device", "cpu", "--num-workers", "0"]


def readme_commands() -> list[tuple[str, str]]:
    """(section, command) of every line of the README's bash blocks, in order: continuation lines joined,
    comments dropped."""
    found, section = [], ""
    for match in re.finditer(r"^(## [^\n]+)$|^```bash\n(.*?)^```", README.read_text(), re.S | re.M):
        if match.group(1):
            section = match.group(1)
            continue
        for line in match.group(2).replace("\\\n", " ").splitlines():
            command = " ".join(line.split("#")[0].split())
            if command:
                found.append((section, command))
    return found


def _section_commands(title: str) -> list[list[str]]:
    """The ``contrastkit`` commands of a README section, as argument lists."""
    return [shlex.split(c)[1:] for s, c in readme_commands() if s == title and c.startswith("contrastkit ")]


def _contrastkit_args(command: str) -> list[str] | None:
    """The arguments after ``contrastkit`` (or ``python -m contrastkit``, or torchrun's ``-m contrastkit``)."""
    words = shlex.split(command)
    if words[0] == "contrastkit":
        return words[1:]
    if "-m" in words and words[words.index("-m") + 1] == "contrastkit":
        return words[words.index("-m") + 2:]
    return None


def test_every_readme_command_is_held():
    from contrastkit.cli import build_parser

    commands = readme_commands()
    assert len(commands) > 30
    for section, command in commands:
        held = section in RUN_HERE or section in SECTION_TESTS or command in ELSEWHERE
        assert held, f"README command {command!r} ({section}) is run by no test"
        if command.startswith(GPU_ONLY):
            build_parser().parse_args(_contrastkit_args(command))  # every flag exists
    for file, function in SECTION_TESTS.values():
        text = (ROOT / file).read_text()
        assert f"def {function}(" in text and "README" in text
    assert {s for s, _ in commands} >= set(RUN_HERE) | set(SECTION_TESTS)


def test_the_readme_lists_every_protocol_of_eval():
    from contrastkit.evaluate.options import ALL_PROTOCOLS

    text = README.read_text()
    section = text[text.index("## Command line"):text.index("**Data.**")]
    assert all(f"`{p}`" in section for p in ALL_PROTOCOLS), [p for p in ALL_PROTOCOLS if f"`{p}`" not in section]


def test_the_python_names_the_readme_gives_exist():
    """The API paragraph's names: ``contrastkit.X`` and the names listed in parentheses after a module."""
    text = README.read_text()
    paragraph = text[text.index("The whole job:"):text.index("## Using the encoder elsewhere")]
    from contrastkit.train import PretrainConfig, pretrain  # "(both also in `contrastkit.train`)"

    assert PretrainConfig is importlib.import_module("contrastkit").PretrainConfig and callable(pretrain)
    for dotted, listed in re.findall(r"`(contrastkit(?:\.\w+)+)`(?: \(([^)]*)\))?", paragraph):
        parts = dotted.split(".")
        obj = importlib.import_module(parts[0])
        for part in parts[1:]:
            obj = getattr(obj, part) if hasattr(obj, part) else importlib.import_module(f"{obj.__name__}.{part}")
        for name in re.findall(r"`(\w+)`", listed):
            assert hasattr(obj, name), f"{dotted}.{name}"


def test_python_api_example_runs():
    text = README.read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert torch.isfinite(namespace["loss"]) and torch.isfinite(namespace["supcon"])
    assert namespace["x1"].shape == (64, 3, 32, 32) and namespace["z1"].shape[0] == 64
    assert namespace["fast"].check_values is False


# ------------------------------------------------------------------------------------------- running them


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A fresh clone's working folder: ``HOME`` of its own holding CIFAR-10 where torchvision downloads it, the
    README's folders of images (``my_images/`` with class folders, ``photos/``, ``me.jpg``, ``queries/``)."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    write_cifar(home / ".cache" / "contrastkit" / "datasets", monkeypatch, "cifar10", train_per_class=8)
    make_image_folder(work / "my_images", per_class=6, size=16, split=False)
    photos = make_flat_folder(work / "photos", n=12, size=20)
    shutil.copy(photos / "img_002.png", work / "me.jpg")  # PNG data named .jpg: read by content
    (work / "queries").mkdir()
    for name in ("img_004.png", "img_007.png"):
        shutil.copy(photos / name, work / "queries" / name)
    return work


def _smaller(args: list[str]) -> list[str]:
    """``args`` with the flags that shrink its run appended (argparse takes the last value)."""
    command = args[0]
    if command in ("pretrain", "distill"):
        if "--resume" in args:
            return [*args, "--device", "cpu", "--no-progress", "--num-workers", "0"]
        extra = list(_SMALL)
        if "--cifar-stem" not in args:  # --cifar-stem off is there for torchvision's ResNet, which has width 1
            extra += ["--width", "0.125", "--channels-last", "auto"]  # a recipe's channels_last is for width >= 0.25
        if "--batch-size" in args:
            extra += ["--batch-size", "8"]
        if "--micro-batch-size" in args:
            extra += ["--micro-batch-size", "4"]
        return [*args, *extra]
    if command == "eval":
        protocol = args[args.index("--protocol") + 1] if "--protocol" in args else "knn"
        extra = ["--linear-epochs", "1"] if protocol in ("linear", "all") else []
        extra += ["--finetune-epochs", "1"] if protocol in ("finetune", "all") else []
        return [*args, *_CPU, *extra]
    if command in ("embed", "index"):
        return [*args, *_CPU, "--no-progress"]
    if command in ("search", "experiment"):
        return [*args, "--device", "cpu"]
    return args


def _run(command: str, capsys) -> None:
    """Run one README command in the current folder; assert that it succeeds."""
    from contrastkit.cli import main

    args = _contrastkit_args(command)
    assert args is not None, command
    if command.startswith("torchrun"):
        words = shlex.split(command)
        torchrun = [sys.executable, "-m", "torch.distributed.run", *words[1:words.index("-m")], "-m", "contrastkit"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([*torchrun, *_smaller(args)], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-3000:])
        return
    try:
        code = main(_smaller(args))
    except SystemExit as exc:  # --help
        code = exc.code
    assert code == 0, (command, capsys.readouterr().err[-3000:])


def _run_section(title: str, capsys) -> None:
    for section, command in readme_commands():
        if section == title and command not in ELSEWHERE and not command.startswith(GPU_ONLY):
            _run(command, capsys)


@pytest.mark.slow
def test_the_command_line_section_runs(clone, capsys):
    _run_section("## Command line", capsys)
    err = capsys.readouterr().err
    # the tiny CIFAR-10 has 80 training images: an unset batch size is lowered, in one line
    assert "note: --batch-size 64: the default, 256, is larger than the training set (80 images)" in err
    for run in ("x", "v2", "d", "cifar", "fast", "mine", "ddp", "big"):
        assert (clone / "runs" / run / "last.pt").is_file(), run
    assert (clone / "runs" / "x" / "eval_all.md").is_file() and (clone / "runs" / "v2" / "ft.pt").is_file()
    assert (clone / "runs" / "x" / "emb.npy").is_file() and (clone / "grid.png").is_file()
    import json

    embedded = json.loads((clone / "runs" / "x" / "emb.json").read_text())
    assert embedded["count"] == 1797 and embedded["split"] == "all"  # every image of digits, train and test


@pytest.mark.slow
def test_the_export_section_runs(clone, capsys):
    from contrastkit.cli import main

    assert main(["pretrain", "--data", "digits", "--out", "runs/x", "--width", "0.125", *_SMALL]) == 0
    _run_section("## Using the encoder elsewhere", capsys)
    text = README.read_text()
    section = text[text.index("## Using the encoder elsewhere"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {"image": Image.open(clone / "photos" / "img_000.png").convert("RGB")}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["h"].shape == (1, 64)
    assert (clone / "resnet18.pt").is_file() and (clone / "resnet18.pt.json").is_file()


@pytest.mark.slow
def test_the_search_section_runs(clone, capsys):
    _run_section("## Search your own images", capsys)
    assert "note: --batch-size 8: the default, 256, is larger than the training set (12 images)" in \
        capsys.readouterr().err
    assert (clone / "results" / "gallery.html").is_file() and (clone / "runs" / "photos" / "emb.npy").is_file()


def test_queue_and_multilabel_commands_train(tmp_path, monkeypatch):
    """The README's commands for the queue and multi-label methods train as written, on tiny stand-ins for their
    data (CIFAR-10 in torchvision's format, a flat folder with a CSV of label sets)."""
    from contrastkit.cli import main

    commands = _section_commands("## A momentum queue, and multi-label SupCon")
    assert [c[c.index("--method") + 1] for c in commands if c[0] == "pretrain"] == ["simclr-queue", "supcon-queue",
                                                                                   "supcon-multilabel"]
    assert [c[0] for c in commands] == ["pretrain"] * 3 + ["eval"]
    write_cifar(tmp_path / "datasets", monkeypatch, "cifar10", train_per_class=2)
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
            "--device", "cpu", "--data-root", str(tmp_path / "datasets")]
    for argv in commands:
        argv = [{"photos": str(flat), "photos.csv": str(tmp_path / "photos.csv")}.get(a, a) for a in argv]
        argv = [str(tmp_path / a) if a.startswith("runs/") else a for a in argv]
        assert main([*argv, *(tiny if argv[0] == "pretrain" else ["--device", "cpu", "--num-workers", "0"])]) == 0, argv
    scores = json.loads((tmp_path / "runs" / "multilabel" / "eval_retrieval_photos.json").read_text())["metrics"]
    assert 0.0 <= scores["map@r"] <= 1.0 and scores["n_images"] == len(list(flat.glob("*.png")))
