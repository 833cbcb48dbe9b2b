import json

import pytest
import torch

from contrastkit.evaluate import export_embeddings, load_embeddings


def test_round_trip(tmp_path):
    x = torch.randn(5, 3)
    y = torch.tensor([0, 2, 1, 1, 0])
    paths = ["a.png", "dir/b,with comma.png", "c.png", "d.png", "e.png"]
    written = export_embeddings(x, y, paths, tmp_path / "sub" / "emb", what="z", meta={"encoder": "resnet18"})
    assert {k: p.name for k, p in written.items()} == {"npy": "emb.npy", "csv": "emb.csv", "json": "emb.json"}
    assert all(p.is_file() for p in written.values())
    loaded = load_embeddings(tmp_path / "sub" / "emb.npy")
    torch.testing.assert_close(loaded["features"], x)
    assert torch.equal(loaded["labels"], y)
    assert loaded["paths"] == paths
    assert loaded["meta"]["dim"] == 3 and loaded["meta"]["count"] == 5
    assert loaded["meta"]["what"] == "z" and loaded["meta"]["encoder"] == "resnet18"
    assert written["csv"].read_text().splitlines()[0] == "index,path,label"


def test_without_paths(tmp_path):
    out = export_embeddings(torch.ones(2, 4), torch.tensor([1, 0]), None, str(tmp_path / "e"))
    loaded = load_embeddings(out["json"])
    assert loaded["paths"] == ["", ""] and loaded["meta"]["what"] == "h"


def test_export_errors(tmp_path):
    x, y = torch.randn(3, 2), torch.tensor([0, 1, 0])
    with pytest.raises(ValueError, match="paths has 2 entries but features has N=3"):
        export_embeddings(x, y, ["a", "b"], tmp_path / "e")
    with pytest.raises(ValueError, match=r"what must be one of \('h', 'z'\), got 'q'"):
        export_embeddings(x, y, None, tmp_path / "e", what="q")
    with pytest.raises(ValueError, match=r"labels has shape \(2,\) but features has N=3"):
        export_embeddings(x, y[:2], None, tmp_path / "e")
    with pytest.raises(ValueError, match="reserved"):
        export_embeddings(x, y, None, tmp_path / "e", meta={"dim": 5})


def test_load_detects_mismatch_and_missing(tmp_path):
    out = export_embeddings(torch.randn(3, 2), torch.tensor([0, 1, 0]), None, tmp_path / "e")
    meta = json.loads(out["json"].read_text())
    meta["count"] = 4
    out["json"].write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="embedding files disagree"):
        load_embeddings(tmp_path / "e")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_embeddings(tmp_path / "missing")
