"""Chaos (issue 25): SIGKILL pretrain, index --update and embed at random moments (seeded), 22 kills in all. After
each kill, what the last completed step wrote is there and readable (a checkpoint, an index, a set of embedding
files), and the next run of the same command finishes. The moments are drawn over the time an unkilled run takes,
measured first, so the kills land in every phase: start, work, checkpoints and publishing."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image_folder
from contrastkit.evaluate import load_embeddings
from contrastkit.models import load_checkpoint
from contrastkit.runtime.ownership import LOCK
from contrastkit.search import ImageIndex, build_index, list_images
from reliability._common import FAST
from search._common import save_tiny_checkpoint

pytestmark = pytest.mark.slow

_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _attempt(argv: list[str], lock: Path, delay: float | None) -> tuple[bool, float]:
    """Run ``argv``; once it holds ``lock``, SIGKILL it after ``delay`` s (None: let it finish). Returns (killed,
    seconds from taking the lock to the end)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_ENV)
    while not (lock.is_file() and lock.read_text().startswith(f"{proc.pid} ")):
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    t0 = time.perf_counter()
    if delay is not None:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True, time.perf_counter() - t0
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode()
    return False, time.perf_counter() - t0


def _pretrain_argv(data: Path, out: Path, resume: bool) -> list[str]:
    argv = [sys.executable, "-m", "contrastkit", "pretrain", "--method", "simclr", "--data", str(data), "--epochs",
            "4", "--out", str(out), *FAST, "--checkpoint-every-steps", "1", "--log-every", "1"]
    return argv + (["--resume"] if resume else [])


def test_pretrain_killed_8_times(tmp_path):
    rng = random.Random(25)
    data = make_image_folder(tmp_path / "data", per_class=4, size=16)
    _, full = _attempt(_pretrain_argv(data, tmp_path / "ref", False), tmp_path / "ref" / LOCK, None)
    reference = load_checkpoint(tmp_path / "ref" / "last.pt")
    out, kills = tmp_path / "run", 0
    while kills < 8:
        before = load_checkpoint(out / "last.pt")["global_step"] if (out / "last.pt").exists() else None
        killed, _ = _attempt(_pretrain_argv(data, out, (out / "last.pt").exists()), out / LOCK,
                             rng.uniform(0, full))
        kills += killed
        if (out / "last.pt").exists():  # every checkpoint on disk loads; none goes back in time
            assert load_checkpoint(out / "last.pt")["global_step"] >= (before or 0)
        else:
            assert before is None
    _attempt(_pretrain_argv(data, out, (out / "last.pt").exists()), out / LOCK, None)  # the next run finishes
    final = load_checkpoint(out / "last.pt")
    assert final["global_step"] == 12
    assert all(torch.equal(v, reference["model"][k]) for k, v in final["model"].items())  # as if never killed
    assert json.loads((out / "summary.json").read_text())["global_step"] == 12


_UPDATE = """
import sys
from contrastkit.search import build_index
build_index(None, sys.argv[2], sys.argv[1], update=True, device="cpu", num_workers=0, progress=False,
            batch_size=2, shard_size=2)
"""


def _change(images: Path, rng: random.Random, round_: int) -> None:
    """Add two images, replace one, remove one."""
    files = sorted(images.glob("*.png"))
    for i in range(2):
        array = np.full((20, 20, 3), rng.randrange(256), np.uint8)
        Image.fromarray(array).save(images / f"new_{round_}_{i}.png")
    replaced = rng.choice(files)
    Image.fromarray(np.full((20, 20, 3), rng.randrange(256), np.uint8)).save(replaced)
    os.utime(replaced, ns=(replaced.stat().st_atime_ns, replaced.stat().st_mtime_ns + 10**9))
    rng.choice([f for f in files if f != replaced]).unlink()


def test_index_update_killed_7_times(tmp_path):
    rng = random.Random(26)
    checkpoint = save_tiny_checkpoint(tmp_path / "ck" / "last.pt")
    images = tmp_path / "photos"
    shutil.copytree(make_image_folder(tmp_path / "made", per_class=8, classes=3, split=False) / "class_0", images)
    for c in (1, 2):
        for p in (tmp_path / "made" / f"class_{c}").iterdir():
            shutil.copy(p, images / f"c{c}_{p.name}")
    index = tmp_path / "idx"
    build_index(checkpoint, images, index, device="cpu", num_workers=0, progress=False)
    argv = [sys.executable, "-c", _UPDATE, str(index), str(images)]
    _change(images, rng, 0)
    _, full = _attempt(argv, index / LOCK, None)  # how long an update takes
    kills, round_ = 0, 1
    while kills < 7:
        old = set(ImageIndex.load(index).paths)
        _change(images, rng, round_)
        round_ += 1
        killed, _ = _attempt(argv, index / LOCK, rng.uniform(0, 1.2 * full))
        kills += killed
        loaded = ImageIndex.load(index)  # the old index or the new one, whole
        assert set(loaded.paths) in (old, set(list_images(images)))
        np.testing.assert_allclose(np.linalg.norm(np.asarray(loaded.vectors), axis=1), 1.0, atol=1e-5)
    _attempt(argv, index / LOCK, None)  # the next run finishes
    final = ImageIndex.load(index)
    assert sorted(final.paths) == list_images(images)
    fresh = build_index(checkpoint, images, tmp_path / "fresh", device="cpu", num_workers=0, progress=False)
    assert fresh["count"] == len(final)
    reference = ImageIndex.load(tmp_path / "fresh")
    by_path = dict(zip(reference.paths, np.asarray(reference.vectors)))
    for path, vector in zip(final.paths, np.asarray(final.vectors)):  # changed images were embedded again
        np.testing.assert_allclose(vector, by_path[path], atol=1e-5)
    assert not [p for p in index.iterdir() if p.name not in (LOCK, ".contrastkit.json", "index.json")
                and f".{final.generation}." not in p.name]  # no leftovers of killed updates


_EMBED = """
import sys
from contrastkit.search import embed_to_files
embed_to_files(sys.argv[1], sys.argv[2], data=sys.argv[3], split="train", device="cpu", num_workers=0,
               progress=False, batch_size=4, shard_size=8, overwrite=True)
"""


def test_embed_killed_7_times(tmp_path):
    rng = random.Random(27)
    checkpoints = [save_tiny_checkpoint(tmp_path / f"ck{i}" / "last.pt", seed=i) for i in (0, 1)]
    data = make_image_folder(tmp_path / "data", per_class=16, classes=3, split=False)
    stem = tmp_path / "out" / "emb"
    argv = [sys.executable, "-c", _EMBED, "", str(stem), str(data)]
    lock = stem.parent / ".emb.npy.lock"
    argv[3] = str(checkpoints[0])
    _, full = _attempt(argv, lock, None)
    complete = json.loads(stem.with_suffix(".json").read_text())["fingerprint"]
    rows = load_embeddings(stem)["features"].shape[0]  # the train split: 39 images
    kills, i = 0, 1
    while kills < 7:
        argv[3] = str(checkpoints[i % 2])
        i += 1
        killed, _ = _attempt(argv, lock, rng.uniform(0, 1.2 * full))
        kills += killed
        loaded = load_embeddings(stem)  # the previous set or the new one, whole: never a mix
        assert loaded["meta"]["fingerprint"] in (complete, _fingerprint_of(argv[3]))
        assert loaded["features"].shape == (rows, 64) and len(loaded["paths"]) == rows
        complete = loaded["meta"]["fingerprint"]
    _attempt(argv, lock, None)  # the next run finishes
    assert load_embeddings(stem)["meta"]["fingerprint"] == _fingerprint_of(argv[3])
    assert sorted(p.name for p in stem.parent.iterdir() if not p.name.startswith(".")) == [
        "emb.csv", "emb.json", "emb.npy"]


def _fingerprint_of(checkpoint: str) -> str:
    from contrastkit.search import load_frozen_encoder

    return load_frozen_encoder(checkpoint).fingerprint
