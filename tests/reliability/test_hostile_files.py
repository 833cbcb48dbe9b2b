"""No file runs code, and images are data (issue 25, item 3 and the smaller items): readers are chosen by the
file's name and checked against its bytes, TorchScript runs only from a file named .torchscript, no message
advises weights_only=False, images over the pixel or aspect-ratio limit are bad files everywhere, file names are
escaped in text and CSV output, and a labelled method on one class is refused."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_image_folder
from contrastkit.cli import main
from contrastkit.evaluate import load_embeddings
from contrastkit.export import ExportError, load_encoder
from reliability._common import folder, pretrain_args  # noqa: F401  (folder: the fixture)

_CPU = ["--device", "cpu", "--num-workers", "0", "--no-progress"]

_SCRIPTED = '''
import sys, warnings
import torch
warnings.simplefilter("ignore")


class Loud(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.x = torch.zeros(1)

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self):
        return (self.x, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        print("SETSTATE RAN")
        self.x = state[0]
        self.training = state[1]


torch.jit.save(torch.jit.script(Loud()), sys.argv[1])
'''


def _torchscript_that_runs_code(path: Path) -> Path:
    """A TorchScript archive whose ``__setstate__`` runs (prints) when it is loaded."""
    script = path.parent / "make_loud.py"
    script.write_text(_SCRIPTED)
    subprocess.run([sys.executable, str(script), str(path)], check=True, capture_output=True)
    return path


def test_torchscript_runs_only_from_a_file_named_torchscript(tmp_path, capfd):
    archive = _torchscript_that_runs_code(tmp_path / "made.pt")
    run = tmp_path / "run"
    run.mkdir()
    for name in (tmp_path / "encoder.safetensors", tmp_path / "encoder.pt", run / "last.pt"):
        shutil.copy(archive, name)
        with pytest.raises(ExportError, match="TorchScript|bytes are not|no safetensors header"):
            load_encoder(run if name.parent == run else name)
        with pytest.raises(ExportError):
            load_encoder(name, format="safetensors")
    assert "SETSTATE RAN" not in capfd.readouterr().out
    shutil.copy(archive, tmp_path / "asked.torchscript")  # asked for by name: it is run (and then refused: no
    with pytest.raises(ExportError, match="without contrastkit metadata"):  # contrastkit metadata)
        load_encoder(tmp_path / "asked.torchscript")
    assert "SETSTATE RAN" in capfd.readouterr().out


def _evil_pickle(path: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (print, ("PICKLE RAN",))
    torch.save({"model": Evil(), "config": {}}, path)
    return path


@pytest.mark.parametrize("kind", ["torchscript", "pickle"])
def test_every_command_refuses_code_without_advising_weights_only_false(kind, folder, tmp_path, capfd):
    run = tmp_path / "run"
    run.mkdir()
    if kind == "torchscript":
        _torchscript_that_runs_code(run / "last.pt")
    else:
        _evil_pickle(run / "last.pt")
    capfd.readouterr()
    for argv in (["eval", "--checkpoint", str(run), "--device", "cpu", "--num-workers", "0"],
                 ["export", "--checkpoint", str(run), "--format", "torchscript", "--out",
                  str(tmp_path / "e.torchscript")],
                 ["index", "--checkpoint", str(run), "--images", str(folder), "--out", str(tmp_path / "idx"), *_CPU],
                 ["embed", "--checkpoint", str(run), "--data", str(folder), "--out", str(tmp_path / "emb"), *_CPU],
                 ["pretrain", "--resume", *pretrain_args(folder, run)[1:]]):
        assert main(argv) == 2, argv
        captured = capfd.readouterr()
        assert "weights_only=False" not in captured.err and "weights_only` set to `False" not in captured.err
        assert "RAN" not in captured.out and "Traceback" not in captured.err
        assert str(run / "last.pt") in captured.err, captured.err
    with pytest.raises(ExportError) as info:
        load_encoder(run)
    assert "weights_only=False" not in str(info.value) and "RAN" not in capfd.readouterr().out


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels, compressed to a few tens of kB when large."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor, parts = zlib.compressobj(9), []
    for _ in range(0, height, 256):
        parts.append(compressor.compress(row * 256))
    parts.append(compressor.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def _hostile_images(folder: Path) -> list[str]:
    bomb = _png_claiming(folder / "bomb.png", 20000, 20000)
    assert bomb.stat().st_size < 200_000
    sliver = _png_claiming(folder / "sliver.png", 1_000_000, 1)
    return [str(bomb.resolve()), str(sliver.resolve())]


def test_over_limit_images_are_bad_files_in_index_and_search(folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain_args(folder, run)) == 0
    images = tmp_path / "photos"
    shutil.copytree(folder / "test", images)
    hostile = _hostile_images(images)
    capsys.readouterr()
    assert main(["index", "--checkpoint", str(run), "--images", str(images), "--out", str(tmp_path / "idx"),
                 *_CPU]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["count"] == 6 and summary["bad_count"] == 2 and sorted(summary["bad_files"]) == sorted(hostile)
    assert main(["search", "--index", str(tmp_path / "idx"), "--query", hostile[0], "--k", "3", "--device",
                 "cpu"]) == 2
    err = capsys.readouterr().err
    assert "over the limit" in err or "exceeds limit" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_over_limit_images_are_skipped_and_counted_by_pretrain(folder, tmp_path):
    hostile = _hostile_images(folder / "train" / "class_0")
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out, "--skip-bad-files", "--augment-on", "workers")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_bad_files"] == 2
    assert sorted((out / "bad_files.txt").read_text().split()) == sorted(str(Path(h)) for h in hostile)


def test_a_jpeg_is_decoded_at_the_size_it_is_needed(tmp_path):
    from PIL import Image

    from contrastkit.data.sources import open_rgb

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1600, 1200, 3), dtype=np.uint8)).save(tmp_path / "big.jpg")
    assert open_rgb(tmp_path / "big.jpg").size == (1200, 1600)
    small = open_rgb(tmp_path / "big.jpg", 96)
    assert small.size == (150, 200) and min(small.size) >= 96  # 1/8 scale: still covers 96 px


def test_file_names_are_escaped_in_text_and_csv(tmp_path, capsys):
    from search._common import save_tiny_checkpoint

    checkpoint = save_tiny_checkpoint(tmp_path / "run" / "last.pt")
    images = make_image_folder(tmp_path / "imgs", per_class=2, classes=2, split=False)
    hostile = images / "=cmd|' calc'!A0" / "new\nline.png"
    hostile.parent.mkdir()
    shutil.copy(next((images / "class_0").iterdir()), hostile)
    assert main(["embed", "--checkpoint", str(checkpoint), "--data", str(images), "--split", "train", "--out",
                 str(tmp_path / "emb"), *_CPU]) == 0
    text = (tmp_path / "emb.csv").read_text()
    assert "\nline.png" not in text and ",=" not in text and ",'=cmd" in text
    loaded = load_embeddings(tmp_path / "emb")
    assert str(hostile) in loaded["paths"] and "=cmd|' calc'!A0" in loaded["class_names"]
    assert main(["index", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(tmp_path / "idx"),
                 *_CPU]) == 0
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--query", str(hostile), "--k", "5",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "new\\nline.png" in out and all(line.startswith(("query ", "  ")) for line in out.splitlines())


@pytest.mark.parametrize("method", ["supcon", "ce"])
def test_a_labelled_method_on_one_class_is_refused(method, tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", per_class=8, classes=1)
    out = tmp_path / "run"
    assert main(pretrain_args(data, out, "--method", method)) == 2  # the last --method wins
    err = capsys.readouterr().err
    assert "needs at least two classes" in err and not out.exists()


def test_search_gallery_with_relative_paths_holds_no_absolute_path(folder, tmp_path):
    from search._common import save_tiny_checkpoint

    checkpoint = save_tiny_checkpoint(tmp_path / "ck" / "last.pt")
    assert main(["index", "--checkpoint", str(checkpoint), "--images", str(folder / "train"), "--out",
                 str(tmp_path / "idx"), *_CPU]) == 0
    assert main(["search", "--index", str(tmp_path / "idx"), "--query", str(folder / "test"), "--k", "3", "--out",
                 str(tmp_path / "pics"), "--relative-paths", "--device", "cpu"]) == 0
    page = (tmp_path / "pics" / "gallery.html").read_text()
    assert str(tmp_path) not in page and "class_0/000.png" in page
    assert main(["search", "--index", str(tmp_path / "idx"), "--query", str(folder / "test"), "--k", "3", "--out",
                 str(tmp_path / "pics2"), "--device", "cpu"]) == 0
    assert str(folder) in (tmp_path / "pics2" / "gallery.html").read_text()  # without it: absolute, as before

