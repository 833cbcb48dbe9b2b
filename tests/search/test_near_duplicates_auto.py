"""`search --near-duplicates` with a calibrated threshold, exact copies by content hash (issue 28)."""
from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import contrastkit.search.dedup as dedup
import contrastkit.search.build as build_module
from contrastkit.cli import main
from contrastkit.search import (EDIT_KINDS, FrozenEncoder, ImageIndex, apply_edit, build_index, choose_threshold,
                                exact_duplicate_groups, fingerprint_of, near_duplicates, pixel_hash)
from contrastkit.runtime.ownership import FolderLock, foreign_entries, owned_files
from search._common import make_flat_folder

_CPU = ["--device", "cpu", "--num-workers", "0", "--no-progress"]


def _index(checkpoint, folder: Path, out: Path) -> Path:
    build_index(checkpoint, folder, out, device="cpu", num_workers=0, progress=False)
    return out


def _smooth_images(root: Path, n: int, seed: int = 0) -> None:
    """``n`` distinct 32 x 32 images: random 4 x 4 colour grids scaled up (bicubic)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        grid = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
        Image.fromarray(grid).resize((32, 32), Image.BICUBIC).save(root / f"img_{i:03d}.png")


def _plant(root: Path, per_kind: int, seed: int = 100) -> list[tuple[str, str]]:
    """An edited copy of each of the first ``per_kind`` x 6 images, cycling through the edit kinds."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i, kind in enumerate(list(EDIT_KINDS) * per_kind):
        original = root / f"img_{i:03d}.png"
        copy = root / f"img_{i:03d}_{kind}.png"
        apply_edit(Image.open(original).convert("RGB"), kind, rng).save(copy)
        pairs.append((str(original.resolve()), str(copy.resolve())))
    return pairs


@pytest.fixture
def pixel_encoder(monkeypatch) -> FrozenEncoder:
    """A stand-in model whose vector is the image at 4 x 4 pixels, as every index and calibration loads it."""
    module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten()).eval()
    stats = ((0.5,) * 3, (0.25,) * 3)
    encoder = FrozenEncoder(module, 32, *stats, "h", "/stand-in/last.pt", fingerprint_of(module, 32, *stats, "h"), [])
    monkeypatch.setattr(build_module, "load_frozen_encoder", lambda *args, **kwargs: encoder)
    monkeypatch.setattr(dedup, "load_frozen_encoder", lambda *args, **kwargs: encoder)
    return encoder


def _collection(rng, n: int, dup_fraction: float, other: tuple[float, float]) -> tuple[dict, np.ndarray]:
    """Copy scores U(0.5, 1) for two edit kinds, and best-match scores of n sampled images: a fraction
    ``dup_fraction`` have a genuine near-duplicate (scoring like a copy), the others match an image U(other)."""
    positives = {"a": rng.uniform(0.5, 1.0, size=n), "b": rng.uniform(0.5, 1.0, size=n)}
    has_dup = rng.random(n) < dup_fraction
    negatives = np.where(has_dup, rng.uniform(0.5, 1.0, size=n), rng.uniform(*other, size=n))
    return positives, negatives


def test_choose_threshold_separates_and_estimates_the_duplicates():
    positives, negatives = _collection(np.random.default_rng(0), 10000, 0.3, (-0.2, 0.4))
    cal = choose_threshold(positives, negatives, 0.95)
    assert cal.reached and cal.estimated_precision >= 0.95
    assert cal.duplicate_fraction == pytest.approx(0.3, abs=0.04)
    # above every non-duplicate, and not much higher than the noise of c (a few percent) asks
    assert 0.4 <= cal.threshold <= 0.6 and cal.estimated_recall >= 0.8
    assert set(cal.recall_per_edit) == {"a", "b"}


def test_choose_threshold_overlapping_meets_the_target_in_truth():
    rng = np.random.default_rng(1)
    # non-duplicates overlap the copies' lower half, not the upper half where c is estimated
    positives, negatives = _collection(rng, 10000, 0.3, (0.0, 0.7))
    cal = choose_threshold(positives, negatives, 0.9)
    t = cal.threshold
    recall = (1.0 - t) / 0.5  # the copies' U(0.5, 1) above t
    false = min(1.0, max(0.0, (0.7 - t) / 0.7))  # the non-duplicates' U(0, 0.7) above t
    true_precision = 0.3 * recall / (0.3 * recall + 0.7 * false)
    assert cal.reached and true_precision >= 0.87, (t, true_precision, cal)
    assert recall >= 0.4  # not far above what the target needs
    lower = choose_threshold(positives, negatives, 0.6)
    assert lower.threshold < t and lower.estimated_recall > cal.estimated_recall


def test_choose_threshold_without_duplicates_is_out_of_reach():
    positives, negatives = _collection(np.random.default_rng(2), 500, 0.0, (-0.2, 0.4))
    cal = choose_threshold(positives, negatives, 0.95)
    assert not cal.reached and cal.duplicate_fraction == 0.0 and cal.threshold > negatives.max()
    assert "out of reach" in cal.summary()


def test_calibration_finds_planted_copies(pixel_encoder, tmp_path):
    _smooth_images(tmp_path / "photos", 150)
    pairs = _plant(tmp_path / "photos", per_kind=4)
    idx = _index("stand-in", tmp_path / "photos", tmp_path / "idx")
    result = near_duplicates(idx, target_precision=0.9, device="cpu", sample=174)
    cal = result.calibration
    assert cal is not None and not result.reused and cal.reached and cal.sampled == 174
    assert set(cal.recall_per_edit) == set(EDIT_KINDS)
    assert cal.duplicate_fraction == pytest.approx(48 / 174, abs=0.08)  # 24 planted pairs among 174 images
    reported = {frozenset((a, b)) for g in result.groups for i, a in enumerate(g.paths) for b in g.paths[i + 1:]}
    planted = {frozenset(p) for p in pairs}
    # a small collection leaves the estimate uncertain, so the threshold keeps a margin: half the copies or more
    assert len(reported & planted) >= 12, cal.summary()
    assert len(reported & planted) / len(reported) >= 0.85, cal.summary()
    for g in result.groups:
        assert g.scores[0] is None and all(s >= result.threshold for s in g.scores[1:] if s is not None) or \
            len(g.paths) > 2  # in a chain of 3 or more, a member may be linked through another
        assert len(g.scores) == len(g.paths) == len(g.identical)


def test_stored_threshold_is_reused_on_reload(checkpoint, tmp_path, monkeypatch, capsys):
    make_flat_folder(tmp_path / "photos", n=12)
    idx = _index(checkpoint, tmp_path / "photos", tmp_path / "idx")
    first = near_duplicates(idx, device="cpu", sample=12)
    stored = json.loads((idx / "index.json").read_text())["near_duplicates"]
    assert stored["threshold"] == first.threshold and stored["target_precision"] == 0.95

    def refuse(*args, **kwargs):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(dedup, "calibrate_index", refuse)
    again = near_duplicates(ImageIndex.load(idx), device="cpu", sample=12)
    assert again.reused and again.threshold == first.threshold
    # the CLI (default sample) calibrates with its own sample size: stored once, then reused and printed
    monkeypatch.undo()
    assert main(["search", "--index", str(idx), "--near-duplicates", "--json", "--device", "cpu"]) == 0
    monkeypatch.setattr(dedup, "calibrate_index", refuse)
    capsys.readouterr()
    assert main(["search", "--index", str(idx), "--near-duplicates", "--json", "--device", "cpu"]) == 0
    monkeypatch.undo()
    out = capsys.readouterr()
    printed = json.loads(out.out)
    assert "near-duplicate threshold" in out.err and "estimated precision" in out.err
    assert "stored in the index" in out.err and printed["calibration"]["reused"]
    assert printed["threshold"] == pytest.approx(json.loads((idx / "index.json").read_text())
                                                 ["near_duplicates"]["threshold"])
    other = near_duplicates(idx, target_precision=0.5, device="cpu", sample=12)
    assert not other.reused and other.calibration.target_precision == 0.5


def test_update_drops_the_stored_calibration(checkpoint, tmp_path):
    make_flat_folder(tmp_path / "photos", n=8)
    idx = _index(checkpoint, tmp_path / "photos", tmp_path / "idx")
    near_duplicates(idx, device="cpu", sample=8)
    make_flat_folder(tmp_path / "photos" / "more", n=3, seed=5)
    build_index(None, tmp_path / "photos", idx, update=True, device="cpu", num_workers=0, progress=False)
    assert "near_duplicates" not in json.loads((idx / "index.json").read_text())
    assert not near_duplicates(idx, device="cpu", sample=8).reused


@pytest.mark.parametrize("threshold", [2.5, 100.0, "auto"])  # a score is at most 2: nothing but exact copies
def test_exact_duplicates_are_found_at_any_threshold(checkpoint, tmp_path, threshold):
    folder = make_flat_folder(tmp_path / "photos", n=6)
    shutil.copy(folder / "img_001.png", folder / "img_001_copy.png")  # the same bytes
    Image.open(folder / "img_004.png").save(folder / "img_004_as.bmp")  # other bytes, the same pixels
    idx = _index(checkpoint, folder, tmp_path / "idx")
    result = near_duplicates(idx, threshold, device="cpu", sample=8)
    by_first = {Path(g.paths[0]).name: g for g in result.groups}
    assert [Path(p).name for p in by_first["img_001.png"].paths] == ["img_001.png", "img_001_copy.png"]
    assert [Path(p).name for p in by_first["img_004.png"].paths] == ["img_004.png", "img_004_as.bmp"]
    assert by_first["img_004.png"].identical == [False, True]  # the first image is the reference


def test_an_index_written_before_hashes_and_vectors_were_stored(checkpoint, tmp_path):
    folder = make_flat_folder(tmp_path / "photos", n=5)
    shutil.copy(folder / "img_002.png", folder / "img_002_copy.png")
    idx = _index(checkpoint, folder, tmp_path / "idx")
    info = json.loads((idx / "index.json").read_text())
    stored = np.load(idx / info["files"]["dup_vectors"])
    for key in ("hashes", "dup_vectors"):  # as an index written before issue 28
        (idx / info["files"].pop(key)).unlink()
    (idx / "index.json").write_text(json.dumps(info))
    assert ImageIndex.load(idx).pixel_hashes() is None and ImageIndex.load(idx).dup_vectors() is None
    result = near_duplicates(idx, 2.5, device="cpu")
    assert [[Path(p).name for p in g.paths] for g in result.groups] == [["img_002.png", "img_002_copy.png"]]
    assert result.not_stored is None
    again = ImageIndex.load(idx)  # computed once, with the index's checkpoint, and kept: a generation of its own
    assert again.generation == info["generation"] + 1
    assert again.files["vectors"] == info["files"]["vectors"]  # the vectors it was computed from stay
    assert again.pixel_hashes().shape == (6, 16) and again.pixel_hashes().any(axis=1).all()
    assert np.allclose(again.dup_vectors(), stored, atol=1e-5)
    assert not (idx / ".partial-dup").exists() and foreign_entries(idx) == []  # every file listed in the marker


def test_pixel_hash_and_exact_groups():
    a = Image.new("RGB", (4, 3), (10, 20, 30))
    b = Image.new("RGB", (3, 4), (10, 20, 30))  # the same bytes in another shape
    assert not np.array_equal(pixel_hash(a), pixel_hash(b))
    assert np.array_equal(pixel_hash(a), pixel_hash(a.convert("RGBA")))  # converted to RGB first
    hashes = np.stack([pixel_hash(a), pixel_hash(b), np.zeros(16, np.uint8), pixel_hash(a),
                       np.zeros(16, np.uint8)])
    assert exact_duplicate_groups(hashes) == [[0, 3]]  # unknown (zero) rows match nothing


def test_json_and_gallery_view(checkpoint, tmp_path, capsys):
    folder = make_flat_folder(tmp_path / "photos", n=6)
    shutil.copy(folder / "img_003.png", folder / "img_003_copy.png")
    idx = _index(checkpoint, folder, tmp_path / "idx")
    capsys.readouterr()
    assert main(["search", "--index", str(idx), "--near-duplicates", "2.5", "--json", "--out",
                 str(tmp_path / "res")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["threshold"] == 2.5 and "calibration" not in printed
    assert [str(folder / "img_003.png"), str(folder / "img_003_copy.png")] in printed["groups"]
    assert all(len(s) == len(g) for s, g in zip(printed["scores"], printed["groups"]))

    class Rows(HTMLParser):
        rows, images = 0, 0

        def handle_starttag(self, tag, attrs):
            self.rows += tag == "tr" and dict(attrs).get("class") == "group-row"
            self.images += tag == "img"

    page = (tmp_path / "res" / "duplicates.html").read_text()
    parser = Rows()
    parser.feed(page)
    assert parser.rows == len(printed["groups"]) and parser.images == sum(map(len, printed["groups"]))
    assert "identical pixels" in page and "https://" not in page and "http://" not in page
    # names visible and linked to the images; each member with its score and cosine similarity with the first
    assert page.count('href="file:///') == 2 * sum(map(len, printed["groups"]))
    group = printed["groups"].index([str(folder / "img_003.png"), str(folder / "img_003_copy.png")])
    assert printed["similarities"][group][0] is None
    assert printed["similarities"][group][1] == pytest.approx(1.0, abs=1e-5)  # the same pixels: the same h
    assert ">img_003_copy.png</a><br>identical pixels<br>score " in page and "<br>similarity 1.000" in page


def test_bad_input_gets_a_clear_error(checkpoint, tmp_path, capsys):
    folder = make_flat_folder(tmp_path / "photos", n=1)
    idx = _index(checkpoint, folder, tmp_path / "idx")
    with pytest.raises(ValueError, match="at least 2 images to compare, got 1"):
        near_duplicates(idx, device="cpu")
    for bad in (0, 1, 1.5, -0.2, "high", True):
        with pytest.raises(ValueError, match=r"strictly between 0 and 1 .*got"):
            near_duplicates(idx, target_precision=bad)
    with pytest.raises(ValueError, match="'auto' or a score .*got 'often'"):
        near_duplicates(idx, "often")
    with pytest.raises(ValueError, match="calibration sample must be a positive number of images, got 0"):
        near_duplicates(idx, sample=0)
    rc = main(["search", "--index", str(idx), "--near-duplicates", "--target-precision", "1.5"])
    assert rc == 2 and "strictly between 0 and 1" in capsys.readouterr().err
    rc = main(["search", "--index", str(idx), "--near-duplicates", "often"])
    assert rc == 2 and "got 'often'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    shutil.copytree(idx, empty)
    info = json.loads((empty / "index.json").read_text())
    (empty / "index.json").write_text(json.dumps({**info, "count": 0}))
    (empty / info["files"]["paths"]).write_text("[]")
    np.save(empty / info["files"]["vectors"], np.zeros((0, int(info["dim"])), np.float32))
    np.save(empty / info["files"]["hashes"], np.zeros((0, 16), np.uint8))
    with pytest.raises(ValueError, match="holds no images"):
        near_duplicates(empty)


def test_what_a_search_adds_is_a_generation_of_the_index(checkpoint, tmp_path):
    """The space and the calibration are written as the next generation, listed in the marker; an update then
    makes a generation without them and removes their files."""
    folder = make_flat_folder(tmp_path / "photos", n=8)
    idx = _index(checkpoint, folder, tmp_path / "idx")
    before = json.loads((idx / "index.json").read_text())
    near_duplicates(idx, device="cpu", sample=8)
    after = json.loads((idx / "index.json").read_text())
    space = after["files"]["space"]
    assert after["generation"] == before["generation"] + 1 and space == f"near_duplicates.{after['generation']}.npz"
    assert {k: v for k, v in after["files"].items() if k != "space"} == before["files"]
    assert (idx / space).is_file() and owned_files(idx)[space] == "search" and foreign_entries(idx) == []
    make_flat_folder(folder / "more", n=2, seed=3)
    build_index(None, folder, idx, update=True, device="cpu", num_workers=0, progress=False)
    assert not (idx / space).exists() and space not in owned_files(idx)
    assert "space" not in json.loads((idx / "index.json").read_text())["files"]


def test_an_index_being_written_is_searched_but_not_changed(checkpoint, tmp_path, capsys):
    """While another process holds the index's writer lock (an update), near-duplicates are found and nothing is
    written; the note says why."""
    folder = make_flat_folder(tmp_path / "photos", n=6)
    shutil.copy(folder / "img_001.png", folder / "img_001_copy.png")
    idx = _index(checkpoint, folder, tmp_path / "idx")
    files = {p.name: p.read_bytes() for p in idx.iterdir() if p.is_file() and p.name != ".contrastkit.lock"}
    with FolderLock(idx, "index"):  # as contrastkit index --update holds it (flock: per open file, so this counts)
        result = near_duplicates(idx, device="cpu", sample=6)
        assert main(["search", "--index", str(idx), "--near-duplicates", "--device", "cpu"]) == 0
    assert ["img_001.png", "img_001_copy.png"] in [[Path(p).name for p in g.paths] for g in result.groups]
    assert result.not_stored and "another contrastkit process is writing the index" in result.not_stored
    assert "not stored: another contrastkit process" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in idx.iterdir() if p.is_file() and p.name != ".contrastkit.lock"} == files


@pytest.mark.parametrize("how", ["chmod", "refused"])
def test_a_read_only_index_is_searched_but_not_changed(checkpoint, tmp_path, monkeypatch, how):
    folder = make_flat_folder(tmp_path / "photos", n=6)
    idx = _index(checkpoint, folder, tmp_path / "idx")
    names = sorted(p.name for p in idx.iterdir())
    if how == "chmod" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    if how == "refused":  # what the lock meets in a read-only folder (for root too)
        def refuse(self):
            raise PermissionError(13, "Permission denied", str(self.path))
        monkeypatch.setattr(FolderLock, "acquire", refuse)
    idx.chmod(0o555)
    try:
        result = near_duplicates(idx, device="cpu", sample=6)
    finally:
        idx.chmod(0o755)
    assert result.calibration is not None and not result.reused
    assert result.not_stored == "the index folder cannot be written (permission denied)"
    assert sorted(p.name for p in idx.iterdir()) == names
