"""Reading a W&B offline run back for the tests: the records of a ``run-<id>.wandb`` file.

The file is a 7-byte header (``:W&B``, magic, version) followed by a LevelDB-style log: 32 KiB blocks of records,
each a 7-byte header (checksum, little-endian length, type: 1 whole, 2 first, 3 middle, 4 last piece) and its
bytes, a ``wandb_internal_pb2.Record``. The wandb package has no public reader for it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_BLOCK, _HEADER = 32768, 7


def read_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pieces, records = _HEADER, b"", []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's zero-padded tail
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0:
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0
            continue
        pieces = chunk if kind in (1, 2) else pieces + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            records.append(record)
    return records


def offline_runs(folder: Path, run_id: str) -> list[Path]:
    """The offline run files of ``run_id`` under ``folder/wandb``, oldest first (one per process)."""
    return sorted((folder / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))


def history(files: list[Path]) -> list[dict[str, Any]]:
    """Every logged row of the runs' files, in order, as {key: value}."""
    rows = []
    for path in files:
        for record in read_records(path):
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def config(files: list[Path]) -> dict[str, Any]:
    """The run's config as the files hold it (later updates win)."""
    out: dict[str, Any] = {}
    for path in files:
        for record in read_records(path):
            kind = record.WhichOneof("record_type")
            items = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
            for item in items:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out
