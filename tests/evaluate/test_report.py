import json

import numpy as np
import pytest
import torch

from contrastkit.evaluate import format_table, read_jsonl, write_json


def test_format_table():
    results = {
        "knn": {"top1": 0.91234, "top5": 0.99},
        "linear": {"top1": 0.9, "top5": 1.0, "recipe": {"epochs": 100}},
        "finetune": {"top1": torch.tensor(0.5), "n_train": 500},
    }
    table = format_table(results, row_header="protocol")
    assert table.splitlines() == [
        "| protocol | top1 | top5 | n_train |",
        "|---|---:|---:|---:|",
        "| knn | 0.9123 | 0.9900 | - |",
        "| linear | 0.9000 | 1.0000 | - |",
        "| finetune | 0.5000 | - | 500 |",
    ]
    assert "| knn | 91.23 |" in format_table(results, percent=True)


def test_format_table_errors():
    with pytest.raises(ValueError, match="results is empty"):
        format_table({})
    with pytest.raises(TypeError, match=r"results\['a'\] must be a mapping"):
        format_table({"a": 0.5})
    with pytest.raises(ValueError, match="no scalar metric"):
        format_table({"a": {"recipe": {}}})


def test_write_json_and_read_jsonl(tmp_path):
    path = write_json({"top1": torch.tensor(0.25), "arr": np.arange(2), "nested": {"t": (1, 2)}}, tmp_path / "a" / "r.json")
    assert json.loads(path.read_text()) == {"top1": 0.25, "arr": [0, 1], "nested": {"t": [1, 2]}}
    with pytest.raises(TypeError, match="cannot write a Linear to JSON"):
        write_json({"m": torch.nn.Linear(1, 1)}, tmp_path / "b.json")
    lines = tmp_path / "metrics.jsonl"
    lines.write_text('{"epoch": 0, "loss": 1.0}\n\n{"epoch": 1, "loss": 0.5}\n')
    assert read_jsonl(lines) == [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}]
    lines.write_text('{"epoch": 0}\n[1]\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2 holds a list"):
        read_jsonl(lines)
