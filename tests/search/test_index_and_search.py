"""`contrastkit index` and `contrastkit search` (issue 19 items 2, 3 and bad input)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import contrastkit.search.build as index_module
from contrastkit.cli import main
from contrastkit.search import ImageIndex, IndexMismatchError, build_index, exact_topk, search

_CPU = ["--device", "cpu", "--num-workers", "0", "--no-progress"]


def _build(checkpoint, folder, out, **kw):
    return build_index(checkpoint, folder, out, device="cpu", num_workers=0, progress=False, **kw)


def test_index_holds_unit_vectors_paths_and_identity(checkpoint, flat_folder, tmp_path):
    (flat_folder / "sub").mkdir()
    shutil.copy(flat_folder / "img_000.png", flat_folder / "sub" / "copy.png")
    (flat_folder / "sub" / "bad.png").write_bytes(b"junk")
    summary = _build(checkpoint, flat_folder, tmp_path / "idx")
    assert summary["count"] == 11 and summary["bad_files"] == [str(flat_folder / "sub" / "bad.png")]
    idx = ImageIndex.load(tmp_path / "idx")
    norms = np.linalg.norm(np.asarray(idx.vectors), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert idx.paths[0] == str(flat_folder / "img_000.png") and str(flat_folder / "sub" / "copy.png") in idx.paths
    assert idx.info["checkpoint"] == str(checkpoint.resolve()) and len(idx.fingerprint) == 64
    assert not list(tmp_path.glob("idx.*"))  # no temporary or partial folder left


def test_update_embeds_only_new_images(checkpoint, flat_folder, tmp_path, monkeypatch):
    _build(checkpoint, flat_folder, tmp_path / "idx")
    before = np.array(ImageIndex.load(tmp_path / "idx").vectors)
    from search._common import make_flat_folder

    make_flat_folder(flat_folder / "more", n=3, seed=5)
    seen = []
    real = index_module.embed_stream
    monkeypatch.setattr(index_module, "embed_stream", lambda enc, src, ids, *a, **k: seen.extend(
                        i.split("\0")[0] for i in ids) or real(enc, src, ids, *a, **k))
    summary = _build(None, flat_folder, tmp_path / "idx", update=True)  # the index's own checkpoint
    assert summary["added"] == 3 and summary["count"] == 13
    assert seen == [str(flat_folder / "more" / f"img_{i:03d}.png") for i in range(3)]
    after = ImageIndex.load(tmp_path / "idx")
    np.testing.assert_array_equal(np.asarray(after.vectors)[:10], before)
    assert _build(None, flat_folder, tmp_path / "idx", update=True)["added"] == 0


def test_search_finds_the_image_itself_first(checkpoint, flat_folder, tmp_path):
    _build(checkpoint, flat_folder, tmp_path / "idx")
    results = search(tmp_path / "idx", flat_folder / "img_004.png", k=4, device="cpu", exclude_self=False)
    assert len(results) == 1 and results[0]["query"] == str(flat_folder / "img_004.png")
    nbs = results[0]["neighbours"]
    assert nbs[0]["path"] == str(flat_folder / "img_004.png") and nbs[0]["similarity"] == pytest.approx(1, abs=1e-4)
    sims = [n["similarity"] for n in nbs]
    assert sims == sorted(sims, reverse=True) and len(nbs) == 4 and results[0]["left_out"] == []


def test_a_query_in_the_index_is_not_its_own_neighbour(checkpoint, flat_folder, tmp_path):
    """The same file, or another file with the same pixels, is left out and named; a re-encoded copy (other
    pixels) is a neighbour like any other."""
    shutil.copy(flat_folder / "img_004.png", flat_folder / "img_004_copy.png")
    _build(checkpoint, flat_folder, tmp_path / "idx")
    Image.open(flat_folder / "img_004.png").save(tmp_path / "same_pixels.bmp")
    Image.open(flat_folder / "img_004.png").save(tmp_path / "resaved.jpg", quality=95)
    inside, outside, resaved = (search(tmp_path / "idx", q, k=10, device="cpu")[0] for q in
                                (flat_folder / "img_004.png", tmp_path / "same_pixels.bmp", tmp_path / "resaved.jpg"))
    own = [str(flat_folder / "img_004.png"), str(flat_folder / "img_004_copy.png")]
    for r in (inside, outside):
        assert r["left_out"] == own and len(r["neighbours"]) == 9  # k=10 of the 11, less the query's two rows
        assert not {n["path"] for n in r["neighbours"]} & set(own)
    assert resaved["left_out"] == [] and {n["path"] for n in resaved["neighbours"][:2]} == set(own)


def test_exact_torch_search_matches_brute_force(monkeypatch):
    import contrastkit.search.backends as backends

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(300, 8, generator=g), dim=1)
    q = x[:7] + 0.1 * torch.randn(7, 8, generator=g)
    monkeypatch.setattr(backends, "_CHUNK_ELEMENTS", 7 * 40)  # 40 rows a chunk: many merges
    sims, idx = exact_topk(x.numpy(), q, 12)
    ref_s, ref_i = (q @ x.T).topk(12, dim=1)
    torch.testing.assert_close(sims, ref_s)
    assert torch.equal(idx, ref_i)


def test_faiss_flat_ivf_hnsw_agree_with_exact(checkpoint, flat_folder, tmp_path):
    pytest.importorskip("faiss")
    from contrastkit.search import FaissSearcher, recall_at_k

    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(2000, 16, generator=g), dim=1)
    q = x[:50]
    exact = exact_topk(x.numpy(), q, 10)[1]
    flat = FaissSearcher("flat", 16).build(x.numpy()).search(q, 10)[1]
    assert recall_at_k(flat, exact) == 1.0
    ivf_all = FaissSearcher("ivf", 16, nlist=8, nprobe=8).build(x.numpy()).search(q, 10)[1]
    assert recall_at_k(ivf_all, exact) == 1.0  # every list visited: exact
    ivf_one = FaissSearcher("ivf", 16, nlist=32, nprobe=1).build(x.numpy()).search(q, 10)[1]
    assert recall_at_k(ivf_one, exact) < 1.0  # one list of 32: misses some
    hnsw = FaissSearcher("hnsw", 16).build(x.numpy()).search(q, 10)[1]
    assert recall_at_k(hnsw, exact) > 0.8
    summary = _build(checkpoint, flat_folder, tmp_path / "ivf", kind="ivf")
    assert 0.0 <= summary["recall_at_10"] <= 1.0 and (tmp_path / "ivf" / "faiss.1.index").is_file()
    assert search(tmp_path / "ivf", flat_folder / "img_002.png", k=3, device="cpu", exclude_self=False)[0][
        "neighbours"][0]["path"] == str(flat_folder / "img_002.png")


def test_torch_and_faiss_backends_give_the_same_neighbours(checkpoint, flat_folder, tmp_path):
    pytest.importorskip("faiss")
    _build(checkpoint, flat_folder, tmp_path / "idx")
    a = search(tmp_path / "idx", flat_folder, k=5, device="cpu", backend="torch")
    b = search(tmp_path / "idx", flat_folder, k=5, device="cpu", backend="faiss")
    assert len(a) == 10
    for ra, rb in zip(a, b):
        assert [n["path"] for n in ra["neighbours"]][:1] == [n["path"] for n in rb["neighbours"]][:1]
        np.testing.assert_allclose([n["similarity"] for n in ra["neighbours"]],
                                   [n["similarity"] for n in rb["neighbours"]], atol=1e-4)


def test_cli_index_then_search_json(checkpoint, flat_folder, tmp_path, capsys):
    assert main(["index", "--checkpoint", str(checkpoint), "--images", str(flat_folder), "--out",
                 str(tmp_path / "idx"), *_CPU]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 10
    assert main(["search", "--index", str(tmp_path / "idx"), "--query", str(flat_folder), "--k", "3", "--json",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    line = json.loads(out)
    assert list(line) == ["results", "skipped"] and len(line["results"]) == 10 and line["skipped"] == []
    for r in line["results"]:
        assert list(r) == ["query", "neighbours", "left_out"] and len(r["neighbours"]) == 3
        assert all(list(n) == ["path", "similarity"] for n in r["neighbours"])
        assert r["left_out"] == [r["query"]] and r["query"] not in [n["path"] for n in r["neighbours"]]


@pytest.mark.parametrize("case", ["not_image", "missing_query", "empty_query_folder", "k_too_large", "k_zero",
                                  "other_checkpoint", "not_an_index"])
def test_search_bad_input(case, checkpoint, other_checkpoint, flat_folder, tmp_path, capsys):
    assert main(["index", "--checkpoint", str(checkpoint), "--images", str(flat_folder), "--out",
                 str(tmp_path / "idx"), *_CPU]) == 0
    capsys.readouterr()
    (tmp_path / "notes.png").write_text("hello")
    (tmp_path / "emptyq").mkdir()
    args = {"not_image": ["--query", str(tmp_path / "notes.png")],
            "missing_query": ["--query", str(tmp_path / "nope.png")],
            "empty_query_folder": ["--query", str(tmp_path / "emptyq")],
            "k_too_large": ["--query", str(flat_folder / "img_000.png"), "--k", "11"],
            "k_zero": ["--query", str(flat_folder / "img_000.png"), "--k", "0"],
            "other_checkpoint": ["--query", str(flat_folder / "img_000.png"), "--checkpoint", str(other_checkpoint)],
            "not_an_index": ["--query", str(flat_folder / "img_000.png")]}[case]
    index = str(flat_folder) if case == "not_an_index" else str(tmp_path / "idx")
    rc = main(["search", "--index", index, *args, "--device", "cpu", "--out", str(tmp_path / "res")])
    err = capsys.readouterr().err
    expected = {"not_image": "not a readable image", "missing_query": "does not exist",
                "empty_query_folder": "holds no image files", "k_too_large": "larger than the index, which holds 10",
                "k_zero": "--k must be >= 1", "other_checkpoint": "is another model",
                "not_an_index": "is not a contrastkit index"}[case]
    assert rc == 2 and err.startswith("contrastkit search: error: ") and expected in err, err
    assert err.count("\n") == 1 and not (tmp_path / "res").exists()


def test_other_checkpoint_refused_by_the_api(checkpoint, other_checkpoint, flat_folder, tmp_path):
    _build(checkpoint, flat_folder, tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match="built with the model of"):
        search(tmp_path / "idx", flat_folder / "img_000.png", checkpoint=other_checkpoint, device="cpu")
    with pytest.raises(IndexMismatchError):
        _build(other_checkpoint, flat_folder, tmp_path / "idx", update=True)


@pytest.mark.parametrize("case", ["empty", "all_bad", "exists", "missing"])
def test_index_bad_input_leaves_no_index(case, checkpoint, flat_folder, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    if case == "all_bad":
        (folder / "a.png").write_text("x")
    if case == "exists":
        folder = flat_folder
        (tmp_path / "idx").mkdir()
        (tmp_path / "idx" / "notes.txt").write_text("mine")
    if case == "missing":
        folder = tmp_path / "nowhere"
    rc = main(["index", "--checkpoint", str(checkpoint), "--images", str(folder), "--out", str(tmp_path / "idx"),
               *_CPU])
    err = capsys.readouterr().err
    expected = {"empty": "holds no image files", "all_bad": "could be read",
                "exists": "holds files that contrastkit did not write", "missing": "is not a folder"}[case]
    assert rc == 2 and expected in err, err
    assert (tmp_path / "idx").exists() == (case == "exists")
    assert case != "exists" or [p.name for p in (tmp_path / "idx").iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("idx.")]


def test_a_failed_write_leaves_the_old_index(checkpoint, flat_folder, tmp_path, monkeypatch):
    _build(checkpoint, flat_folder, tmp_path / "idx")
    before = sorted(p.name for p in (tmp_path / "idx").iterdir())
    from search._common import make_flat_folder

    make_flat_folder(flat_folder / "more", n=2, seed=3)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(index_module, "_write_generation", fail)
    with pytest.raises(OSError, match="disk full"):
        _build(None, flat_folder, tmp_path / "idx", update=True)
    assert len(ImageIndex.load(tmp_path / "idx")) == 10
    # the shards of the update stay for the next run; nothing else is new
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == sorted([*before, ".partial"])
    monkeypatch.undo()
    assert _build(None, flat_folder, tmp_path / "idx", update=True)["count"] == 12
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == sorted(n.replace(".1.", ".2.") for n in before)


def test_an_update_killed_before_index_json_was_replaced_keeps_the_old_index(checkpoint, flat_folder, tmp_path,
                                                                            monkeypatch):
    """A kill after the new generation's files were written and before ``index.json`` named them: the old index
    is the index, and the next update removes the unfinished generation and finishes."""
    _build(checkpoint, flat_folder, tmp_path / "idx")
    from search._common import make_flat_folder

    make_flat_folder(flat_folder / "more", n=2, seed=3)

    def killed(*args):
        raise KeyboardInterrupt  # the process dies here
    monkeypatch.setattr(index_module, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        _build(None, flat_folder, tmp_path / "idx", update=True)
    monkeypatch.undo()
    assert (tmp_path / "idx" / "vectors.2.npy").is_file()  # written, but not the index
    assert len(ImageIndex.load(tmp_path / "idx")) == 10
    assert _build(None, flat_folder, tmp_path / "idx", update=True)["count"] == 12
    assert not (tmp_path / "idx" / "vectors.1.npy").exists() and (tmp_path / "idx" / "vectors.2.npy").is_file()


def test_a_killed_index_build_continues_where_it_stopped(checkpoint, flat_folder, tmp_path, monkeypatch):
    import contrastkit.search.stream as stream

    reference = _build(checkpoint, flat_folder, tmp_path / "ref", shard_size=3)
    real_write, calls = stream._write_shard, []

    def write_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(stream, "_write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        _build(checkpoint, flat_folder, tmp_path / "idx", shard_size=3)
    monkeypatch.setattr(stream, "_write_shard", real_write)
    assert not (tmp_path / "idx" / "index.json").exists()
    assert (tmp_path / "idx" / ".partial" / "shard_000000.npz").is_file()
    with pytest.raises(ValueError, match="its build was stopped: run the same contrastkit index command again"):
        ImageIndex.load(tmp_path / "idx")
    summary = _build(checkpoint, flat_folder, tmp_path / "idx", shard_size=3)  # the same command again
    assert summary["count"] == reference["count"] == 10
    np.testing.assert_allclose(np.asarray(ImageIndex.load(tmp_path / "idx").vectors),
                               np.asarray(ImageIndex.load(tmp_path / "ref").vectors), atol=1e-5)
    assert not (tmp_path / "idx" / ".partial").exists()


def test_a_bad_file_in_a_query_folder_is_skipped_with_a_note(checkpoint, flat_folder, tmp_path, capsys):
    """As index and embed skip bad files: the readable queries are answered, the others named (issue 31 item 6);
    a folder with no readable query is an error naming the files."""
    _build(checkpoint, flat_folder, tmp_path / "idx")
    queries = tmp_path / "q"
    queries.mkdir()
    shutil.copy(flat_folder / "img_001.png", queries / "a.png")
    (queries / "b.png").write_bytes(b"not an image")
    Image.open(flat_folder / "img_002.png").save(queries / "c.jpg", quality=70)
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--query", str(queries), "--k", "2", "--json",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr()
    printed = json.loads(out.out)
    assert [r["query"] for r in printed["results"]] == [str(queries / "a.png"), str(queries / "c.jpg")]
    assert [s["path"] for s in printed["skipped"]] == [str(queries / "b.png")]
    assert "skipped 1 query file that cannot be read" in out.err and "b.png" in out.err
    assert "1 query is in the index" in out.err  # a.png: the pixels of img_001.png
    results = search(tmp_path / "idx", queries, k=2, device="cpu")
    assert len(results) == 2 and [s["path"] for s in results.skipped] == [str(queries / "b.png")]
    (queries / "a.png").write_bytes(b"")
    (queries / "c.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match=r"none of the 3 query files can be read; .*a\.png"):
        search(tmp_path / "idx", queries, k=2, device="cpu")
