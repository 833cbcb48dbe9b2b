"""``contrastkit embed``: h (or z) of every image of a data set or folder, labelled or not, to files.

Writes the files of :mod:`contrastkit.evaluate.embed` (``OUT.npy``, ``OUT.csv`` with the
``class`` column, ``OUT.json``) from the shards of :func:`contrastkit.search.embed_stream`, a
shard at a time, so memory stays bounded. Unlabelled images have label -1 and an empty class
name. Unreadable images are skipped, counted and listed in ``OUT.json`` (``bad_files``). A
killed run leaves its shards in ``OUT.partial/``; the same command continues from them. The
three files are published as one unit with their digests (:mod:`contrastkit.evaluate.embed`);
one ``embed`` at a time writes them.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset

from ..data import load_dataset
from ..evaluate.embed import CSV_HEADER, class_column, embedding_output, seal_embedding_files
from ..runtime import resolve_device
from ..runtime.ownership import remove_owned
from ..runtime.text import csv_cell
from .encoder import load_frozen_encoder
from .stream import SHARD_SIZE, embed_stream, iter_shards

__all__ = ["embed_to_files"]


def _stem(out: str | os.PathLike) -> Path:
    path = Path(os.path.expanduser(os.fspath(out)))
    if path.suffix in (".npy", ".csv", ".json"):
        path = path.with_suffix("")
    if path.name in ("", ".", ".."):
        raise ValueError(f"--out must name a file stem such as 'runs/x/embeddings', got {os.fspath(out)!r}")
    return path


def _pick_split(splits, split: str | None, data: str):
    """The images to embed: ``all`` (the default: train and test, every image; a data set without a test split
    has only ``train``), ``train`` or ``test``. Returns (split, source, one id per image: its path)."""
    if split not in (None, "all", "train", "test"):
        raise ValueError(f"--split must be all, train or test, got {split!r}")
    chosen = split or ("all" if splits.test is not None else "train")
    if chosen == "test" and splits.test is None:
        raise ValueError(f"{data} has no test split (a folder of unlabelled images: its images are all in "
                         f"--split train, the default for it)")
    parts = [p for p in ("train", "test") if chosen in (p, "all") and getattr(splits, p) is not None]
    ids = []
    for part in parts:
        source, paths = getattr(splits, part), getattr(splits, f"{part}_paths")
        ids += [os.path.abspath(p) for p in paths] if paths else [f"{data}/{part}/{i}" for i in range(len(source))]
    sources = [getattr(splits, p) for p in parts]
    return chosen, (sources[0] if len(sources) == 1 else ConcatDataset(sources)), ids


def _write_files(temp: dict[str, Path], work: Path, ids: list[str], classes: list[str], info: dict) -> None:
    """OUT.npy, OUT.csv and OUT.json from the shards, at their temporary names (published by the caller)."""
    shards_meta = [(s["features"].shape, s["positions"].shape[0]) for s in iter_shards(work)]
    count = sum(n for _, n in shards_meta)
    dim = next((shape[1] for shape, n in shards_meta if n), 0)
    matrix = np.lib.format.open_memmap(temp["npy"], mode="w+", dtype=np.float32, shape=(count, dim))
    row = 0
    with open(temp["csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        for shard in iter_shards(work):
            m = shard["features"].shape[0]
            matrix[row:row + m] = shard["features"]
            labels = shard["labels"].tolist()
            for i, (pos, label, name) in enumerate(zip(shard["positions"].tolist(), labels,
                                                       class_column(labels, classes))):
                writer.writerow([row + i, csv_cell(ids[pos]), label, csv_cell(name)])
            row += m
    matrix.flush()
    del matrix
    seal_embedding_files(temp, {"dim": dim, "count": count, **info})


def embed_to_files(checkpoint: str | os.PathLike, out: str | os.PathLike, *, data: str | None = None,
                   data_root: str = "~/.cache/contrastkit/datasets", split: str | None = None,
                   projection: bool = False, device: str = "auto", num_workers: int = 2, batch_size: int = 256,
                   progress: bool = True, shard_size: int = SHARD_SIZE, overwrite: bool = False) -> dict[str, Any]:
    """Embed a split of a data set or folder with a checkpoint's encoder and write OUT.npy/.csv/.json.

    Args:
        checkpoint: a ``last.pt`` written by ``pretrain`` (or its run folder), or an export that
            :func:`contrastkit.load_encoder` reads (which gives h, and needs ``data``).
        out: output stem.
        data: data set name or folder (default: the checkpoint's); labelled or not.
        data_root: where torchvision data sets live.
        split: ``all`` (default: every image, train and test), ``train`` or ``test``.
        projection: export z = g(h) instead of h.
        device, num_workers, batch_size, progress, shard_size: as for :func:`contrastkit.search.embed_stream`.
        overwrite: replace the files an earlier ``embed`` wrote at ``out`` (once the new ones are complete).

    Returns:
        ``{"written": {...}, "count", "dim", "split", "bad_count", "bad_files"}``.

    Raises:
        ValueError: an unknown data set, an empty folder, a missing split, no readable image; files at ``out``
            that contrastkit did not write, or (without ``overwrite``) that it did; another ``embed`` writing
            ``out`` (the last three before any work).
        CheckpointError: a missing or corrupt checkpoint.
    """

    if num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {num_workers}")
    stem = _stem(out)
    work = stem.with_name(stem.name + ".partial")
    with embedding_output(stem, "embed", overwrite, keep=[work.name]) as files:
        dev = resolve_device(device, "--device")
        encoder = load_frozen_encoder(checkpoint, projection=projection)
        data_name = data or encoder.data
        if not data_name:
            raise ValueError(f"{encoder.checkpoint} is an export, which does not record the data it was trained on; "
                             f"pass --data (a data set name or a folder of images) to say what to embed")
        splits = load_dataset(data_name, root=data_root)
        chosen, source, ids = _pick_split(splits, split, data_name)
        res = embed_stream(encoder, source, ids, work, batch_size=batch_size, shard_size=shard_size, device=dev,
                           num_workers=num_workers, progress=progress)
        bad_files = [ids[i] for i in res.bad]
        if res.count == 0:
            raise ValueError(f"none of the {len(ids)} images of {data_name} could be read (first: "
                             f"{bad_files[0]!r}); nothing was written")
        info = {"what": encoder.what, "dtype": "float32", "classes": list(splits.classes),
                "checkpoint": encoder.checkpoint, "fingerprint": encoder.fingerprint, "data": data_name,
                "split": chosen, "bad_count": len(bad_files), "bad_files": bad_files}
        temp = {ext: files.temp(f"{stem.name}.{ext}") for ext in ("npy", "csv", "json")}
        _write_files(temp, work, ids, list(splits.classes), info)
        files.publish([f"{stem.name}.{ext}" for ext in ("npy", "csv", "json")])  # the .json (digests) last
        remove_owned(stem.parent, [work.name])
    written = {ext: str(stem.with_name(f"{stem.name}.{ext}")) for ext in ("npy", "csv", "json")}
    return {"written": written, "count": res.count, "dim": res.dim, "split": chosen, "bad_count": len(bad_files),
            "bad_files": bad_files[:20]}
