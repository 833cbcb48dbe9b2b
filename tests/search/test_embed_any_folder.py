"""`embed` on any folder (issue 19 item 1, issue 21 item 14): labels and class names, bad images, resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import contrastkit.search.stream as stream
from conftest import make_image_folder
from contrastkit.cli import main
from contrastkit.data import ImageFiles
from contrastkit.evaluate import load_embeddings
from contrastkit.search import embed_stream, embed_to_files, iter_shards, load_frozen_encoder

_CPU = ["--device", "cpu", "--num-workers", "0", "--no-progress"]


def test_embed_unlabelled_flat_folder_lists_bad_images(checkpoint, flat_folder, tmp_path, capsys):
    (flat_folder / "broken.png").write_bytes(b"\x89PNG truncated")
    (flat_folder / "notes.jpg").write_text("not an image")
    out = tmp_path / "emb"
    assert main(["embed", "--checkpoint", str(checkpoint), "--data", str(flat_folder), "--out", str(out), *_CPU]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["count"] == 10 and summary["split"] == "train" and summary["bad_count"] == 2
    loaded = load_embeddings(out)
    assert loaded["features"].shape == (10, 64)
    assert loaded["labels"].tolist() == [-1] * 10 and loaded["class_names"] == [""] * 10
    assert loaded["paths"] == [str(flat_folder / f"img_{i:03d}.png") for i in range(10)]
    assert sorted(loaded["meta"]["bad_files"]) == [str(flat_folder / "broken.png"), str(flat_folder / "notes.jpg")]
    assert loaded["meta"]["classes"] == [] and not (tmp_path / "emb.partial").exists()


def test_embed_labelled_folder_writes_class_names(checkpoint, tmp_path):
    folder = make_image_folder(tmp_path / "data", per_class=3, size=16)
    summary = embed_to_files(checkpoint, tmp_path / "e", data=str(folder), device="cpu", num_workers=0,
                             progress=False)
    assert summary["split"] == "all" and summary["count"] == 15  # 9 train and 6 test images: every one
    loaded = load_embeddings(tmp_path / "e")
    assert loaded["meta"]["classes"] == ["class_0", "class_1", "class_2"]
    for path, label, name in zip(loaded["paths"], loaded["labels"].tolist(), loaded["class_names"]):
        assert name == f"class_{label}" and f"/{name}/" in path


def test_embed_matches_batch_extraction(checkpoint, flat_folder, tmp_path):
    """The streamed vectors are the encoder's h of the images, preprocessed as for evaluation."""
    from contrastkit.data import decode_to_array
    from contrastkit.data.views import EvalDataset
    from contrastkit.evaluate import extract_features

    embed_to_files(checkpoint, tmp_path / "e", data=str(flat_folder), device="cpu", num_workers=0, progress=False,
                   batch_size=3, shard_size=4)
    enc = load_frozen_encoder(checkpoint)
    files = ImageFiles([(str(p), -1) for p in sorted(flat_folder.glob("*.png"))])
    images, labels = decode_to_array(files, enc.image_size)
    ref, _ = extract_features(enc.module, EvalDataset(images, torch.zeros(len(labels), dtype=torch.long),
                                                      mean=enc.mean, std=enc.std), batch_size=4)
    torch.testing.assert_close(load_embeddings(tmp_path / "e")["features"], ref, atol=1e-4, rtol=1e-4)


class _Interrupt(KeyboardInterrupt):
    pass


def test_embedding_resumes_after_an_interruption(checkpoint, flat_folder, tmp_path, monkeypatch):
    enc = load_frozen_encoder(checkpoint)
    paths = sorted(str(p) for p in flat_folder.glob("*.png"))
    source = ImageFiles([(p, -1) for p in paths])
    full = embed_stream(enc, source, paths, tmp_path / "full", shard_size=3, batch_size=2, progress=False)
    reference = np.concatenate([s["features"] for s in iter_shards(full.work_dir)])

    real_write, calls = stream._write_shard, []

    def write_then_die(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:  # killed while the third shard is being written: two shards survive
            raise _Interrupt()
        return real_write(*args, **kwargs)

    monkeypatch.setattr(stream, "_write_shard", write_then_die)
    with pytest.raises(_Interrupt):
        embed_stream(enc, source, paths, tmp_path / "work", shard_size=3, batch_size=2, progress=False)
    monkeypatch.setattr(stream, "_write_shard", real_write)
    assert sorted(p.name for p in (tmp_path / "work").glob("shard_*.npz")) == ["shard_000000.npz",
                                                                               "shard_000001.npz"]
    forwards = []
    enc.module.register_forward_hook(lambda m, i, o: forwards.append(i[0].shape[0]))
    resumed = embed_stream(enc, source, paths, tmp_path / "work", shard_size=3, batch_size=2, progress=False)
    assert sum(forwards) == 4 and resumed.embedded_now == 4 and resumed.count == 10  # shards 2 and 3 only
    np.testing.assert_allclose(np.concatenate([s["features"] for s in iter_shards(resumed.work_dir)]), reference,
                               atol=1e-5)


def test_a_partial_run_of_another_job_is_not_reused(checkpoint, other_checkpoint, flat_folder, tmp_path, capsys):
    paths = sorted(str(p) for p in flat_folder.glob("*.png"))
    source = ImageFiles([(p, -1) for p in paths])
    embed_stream(load_frozen_encoder(checkpoint), source, paths, tmp_path / "w", shard_size=4, progress=False)
    res = embed_stream(load_frozen_encoder(other_checkpoint), source, paths, tmp_path / "w", shard_size=4,
                       progress=False)
    assert res.embedded_now == 10 and "starting afresh" in capsys.readouterr().err


def test_embed_of_a_folder_without_images_fails_clearly(checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["embed", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "empty"), "--out",
               str(tmp_path / "e"), *_CPU])
    assert rc == 2 and "holds no image files" in capsys.readouterr().err
    assert not list(tmp_path.glob("e.*"))


def test_a_foreign_folder_in_the_way_is_not_deleted(checkpoint, flat_folder, tmp_path):
    (tmp_path / "e.partial").mkdir()
    (tmp_path / "e.partial" / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is in the way and was not written by contrastkit"):
        embed_to_files(checkpoint, tmp_path / "e", data=str(flat_folder), device="cpu", num_workers=0,
                       progress=False)
    assert (tmp_path / "e.partial" / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.partial", "photos", "run"]
