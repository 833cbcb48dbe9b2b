"""An index follows its images and its model (issue 25 item 6, issue 31 item 4): --update embeds changed images
again and drops removed ones, reporting added / changed / removed; after the run is trained further, the index is
refused with a message that tells the two models apart by step and fingerprint and names --rebuild, which embeds
every image again and replaces the index only when done."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from contrastkit.cli import main
from contrastkit.models import load_checkpoint, save_checkpoint
from contrastkit.search import ImageIndex, IndexMismatchError, build_index, search
from search._common import make_flat_folder

_CPU = ["--device", "cpu", "--num-workers", "0", "--no-progress"]


def _build(checkpoint, folder, out, **kw):
    return build_index(checkpoint, folder, out, device="cpu", num_workers=0, progress=False, **kw)


def test_update_sees_changed_and_removed_images(checkpoint, flat_folder, tmp_path, capsys):
    _build(checkpoint, flat_folder, tmp_path / "idx")
    replaced, gone = flat_folder / "img_003.png", flat_folder / "img_007.png"
    Image.open(flat_folder / "img_005.png").save(replaced)  # img_003 now shows img_005's picture
    os.utime(replaced, ns=(replaced.stat().st_atime_ns, replaced.stat().st_mtime_ns + 10**9))
    gone.unlink()
    make_flat_folder(flat_folder / "more", n=2, seed=4)
    assert main(["index", "--out", str(tmp_path / "idx"), "--update", *_CPU]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["added"], summary["changed"], summary["removed"], summary["count"]) == (2, 1, 1, 11)
    idx = ImageIndex.load(tmp_path / "idx")
    assert str(gone) not in idx.paths
    vectors = np.asarray(idx.vectors)
    row = {p: i for i, p in enumerate(idx.paths)}
    np.testing.assert_allclose(vectors[row[str(replaced)]], vectors[row[str(flat_folder / "img_005.png")]],
                               atol=1e-5)  # the replaced image has its new picture's vector
    hits = search(tmp_path / "idx", flat_folder / "img_000.png", k=11, device="cpu")[0]["neighbours"]
    assert str(gone) not in [h["path"] for h in hits]
    again = _build(None, None, tmp_path / "idx", update=True)
    assert (again["added"], again["changed"], again["removed"]) == (0, 0, 0)


def _train_further(path):
    """The run's checkpoint after more training: other weights, a later step, the same path."""
    state = load_checkpoint(path)
    state["model"] = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in state["model"].items()}
    state["global_step"] = 200
    save_checkpoint(state, path)


def test_a_run_trained_further_is_told_apart_and_rebuilt(checkpoint, flat_folder, tmp_path, capsys):
    state = load_checkpoint(checkpoint)
    state["global_step"] = 100
    save_checkpoint(state, checkpoint)
    _build(checkpoint, flat_folder, tmp_path / "idx")
    before = np.array(ImageIndex.load(tmp_path / "idx").vectors)
    _train_further(checkpoint)
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--query", str(flat_folder / "img_001.png"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"built with the model of {checkpoint} at step 100" in err and "step 200" in err
    assert "trained further" in err and f"contrastkit index --out {tmp_path / 'idx'} --rebuild" in err
    with pytest.raises(IndexMismatchError, match="step 100"):
        _build(None, None, tmp_path / "idx", update=True)
    assert main(["index", "--out", str(tmp_path / "idx"), "--rebuild", *_CPU]) == 0
    idx = ImageIndex.load(tmp_path / "idx")
    assert idx.info["checkpoint_step"] == 200 and len(idx) == 10
    assert not np.allclose(np.asarray(idx.vectors), before)
    assert search(tmp_path / "idx", flat_folder / "img_001.png", k=1, device="cpu", exclude_self=False)[0][
        "neighbours"][0]["path"] == str(flat_folder / "img_001.png")


def test_rebuild_keeps_the_old_index_until_it_is_done(checkpoint, flat_folder, tmp_path, monkeypatch):
    import contrastkit.search.build as build

    _build(checkpoint, flat_folder, tmp_path / "idx")
    before = np.array(ImageIndex.load(tmp_path / "idx").vectors)
    _train_further(checkpoint)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(build, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        _build(None, None, tmp_path / "idx", rebuild=True)
    np.testing.assert_array_equal(np.asarray(ImageIndex.load(tmp_path / "idx").vectors), before)


def test_overwrite_builds_a_new_index_in_place(checkpoint, other_checkpoint, flat_folder, tmp_path, capsys):
    _build(checkpoint, flat_folder, tmp_path / "idx")
    argv = ["index", "--checkpoint", str(other_checkpoint), "--images", str(flat_folder), "--out",
            str(tmp_path / "idx"), *_CPU]
    assert main(argv) == 2 and "already holds an index" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert ImageIndex.load(tmp_path / "idx").info["checkpoint"] == str(other_checkpoint.resolve())
    assert sorted(p.name for p in (tmp_path / "idx").iterdir() if not p.name.startswith(".")) == [
        "dup_vectors.2.npy", "index.json", "paths.2.json", "pixel_hashes.2.npy", "stats.2.json", "vectors.2.npy"]


def test_an_index_of_an_older_version_is_read_and_updated(checkpoint, flat_folder, tmp_path):
    """Before generations: vectors.npy, paths.json and no stats or marker."""
    _build(checkpoint, flat_folder, tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    idx = ImageIndex.load(tmp_path / "new")
    np.save(old / "vectors.npy", np.asarray(idx.vectors))
    (old / "paths.json").write_text(json.dumps(idx.paths))
    info = {k: v for k, v in idx.info.items() if k not in ("generation", "files", "checkpoint_step")}
    (old / "index.json").write_text(json.dumps({**info, "version": 1}))
    assert len(ImageIndex.load(old)) == 10
    make_flat_folder(flat_folder / "more", n=1, seed=9)
    assert _build(None, None, old, update=True)["count"] == 11
    assert not (old / "vectors.npy").exists() and ImageIndex.load(old).generation == 1


def test_searching_with_a_missing_checkpoint_says_what_to_do(checkpoint, flat_folder, tmp_path):
    _build(checkpoint, flat_folder, tmp_path / "idx")
    checkpoint.unlink()
    with pytest.raises(ValueError, match="no longer exists; pass --checkpoint"):
        search(tmp_path / "idx", flat_folder / "img_000.png", device="cpu")

