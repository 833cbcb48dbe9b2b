"""Streaming, resumable embedding of many images, with unreadable ones counted instead of fatal.

Items are embedded in shards of consecutive positions. Each finished shard is written to a work
folder as ``shard_NNNNNN.npz`` (atomically: a temporary file, then a rename) holding the vectors
of its readable items, their positions, labels and content hashes (:mod:`.pixels`), optionally
their near-duplicate vectors (:mod:`.views`), and the positions of the unreadable ones.
Memory is bounded by one shard, whatever the number of images. A run that is killed keeps its
finished shards; the same call again (same encoder, same items, same shard size: checked against
``manifest.json``) embeds only the shards that are missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.views import resize_square
from .encoder import FrozenEncoder
from .pixels import HASH_BYTES, pixel_hash
from .views import view_mean

__all__ = ["StreamResult", "embed_stream", "iter_shards", "SHARD_SIZE"]

#: Items per shard: what a killed run can lose, and what is held in memory at once.
SHARD_SIZE = 4096
_MANIFEST_VERSION = 2  # 2: shards hold the content hashes


class _Prepared(Dataset):
    """``source[i]`` preprocessed as for evaluation, with a flag that is False when it cannot be read, and the
    content hash of its decoded pixels."""

    def __init__(self, source: Dataset, size: int, mean, std) -> None:
        self.source, self.size = source, size
        if hasattr(source, "decode_size"):  # image files: JPEGs decoded at a reduced scale, down to ``size``
            source.decode_size = size
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        try:
            img, label = self.source[index]
            x = resize_square(img, self.size).float().div_(255.0)  # (3, S, S)
            digest = torch.from_numpy(pixel_hash(img))  # (16,) uint8
        except (ValueError, OSError):  # open_rgb names the file in a ValueError; PIL raises OSError
            return torch.zeros(3, self.size, self.size), -1, False, torch.zeros(HASH_BYTES, dtype=torch.uint8)
        return (x - self.mean) / self.std, int(label), True, digest


@dataclass
class StreamResult:
    """Where the shards are and what they hold.

    Attributes:
        work_dir: the folder of shards.
        count: items embedded (readable).
        bad: positions of the unreadable items, ascending.
        dim: the vector dimension D.
        embedded_now: items embedded by this call (the rest came from shards of an earlier, interrupted call).
    """

    work_dir: Path
    count: int
    bad: list[int] = field(default_factory=list)
    dim: int = 0
    embedded_now: int = 0


def _manifest(encoder: FrozenEncoder, ids: Sequence[str], shard_size: int, dup_views: bool) -> dict:
    h = hashlib.sha256()
    for item in ids:
        h.update(item.encode("utf-8", "surrogateescape") + b"\0")
    return {"version": _MANIFEST_VERSION, "fingerprint": encoder.fingerprint, "items": len(ids),
            "items_sha256": h.hexdigest(), "shard_size": shard_size, "dup_views": dup_views}


def _prepare_work_dir(work_dir: Path, manifest: dict) -> None:
    """Keep the shards of an interrupted run of the same job; start afresh for any other job."""
    file = work_dir / "manifest.json"
    if work_dir.exists():
        if not file.is_file() and (not work_dir.is_dir() or any(work_dir.iterdir())):
            raise ValueError(f"{work_dir} exists and is not a contrastkit work folder (no manifest.json); move it "
                             f"away or choose another --out")
        try:
            same = json.loads(file.read_text()) == manifest
        except (OSError, ValueError):
            same = False
        if same:
            return
        print(f"contrastkit: {work_dir} holds an unfinished run of another job (other images or model); "
              f"starting afresh", file=sys.stderr)
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    tmp = file.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, file)


def _shard_file(work_dir: Path, s: int) -> Path:
    return work_dir / f"shard_{s:06d}.npz"


def _write_shard(work_dir: Path, s: int, parts: dict[str, list[torch.Tensor]], positions: list[int],
                 labels: list[int], bad: list[int], dim: int) -> None:
    """Write shard ``s``: the concatenated ``parts`` (features, hashes, dup_features) and the bookkeeping."""
    empty = {"features": np.zeros((0, dim), np.float32), "hashes": np.zeros((0, HASH_BYTES), np.uint8),
             "dup_features": np.zeros((0, dim), np.float32)}
    arrays = {k: torch.cat(v).numpy() if v else empty[k] for k, v in parts.items()}  # (n_ok, ...)
    tmp = work_dir / f"shard_{s:06d}.tmp.npz"
    np.savez(tmp, positions=np.asarray(positions, np.int64), labels=np.asarray(labels, np.int64),
             bad=np.asarray(bad, np.int64), **arrays)
    os.replace(tmp, _shard_file(work_dir, s))


def _shard_batches(s: int, n: int, shard_size: int, batch_size: int) -> list[list[int]]:
    """The batches of positions of shard ``s`` (a batch never straddles two shards)."""
    lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
    return [list(range(i, min(hi, i + batch_size))) for i in range(lo, hi, batch_size)]


def _check_output(out: torch.Tensor, batch: int) -> torch.Tensor:
    if out.dim() != 2 or out.shape[0] != batch:
        raise ValueError(f"the encoder must map (B, 3, S, S) to (B, D); for B={batch} it returned "
                         f"{tuple(out.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise ValueError("the encoder produced non-finite vectors (NaN or inf)")
    return out


@torch.no_grad()
def _embed_batch(encoder: FrozenEncoder, x: torch.Tensor, device: torch.device, dup_views: bool
                 ) -> dict[str, torch.Tensor]:
    """``features`` (B, D) of a batch, and with ``dup_views`` its near-duplicate vectors (:mod:`.views`)."""
    x = x.to(device)
    out = _check_output(encoder.module(x), x.shape[0])  # (B, D)
    result = {"features": out.float().cpu()}
    if dup_views:
        result["dup_features"] = _check_output(view_mean(encoder.module, x, first=out), x.shape[0]).cpu()
    return result


def _run(encoder: FrozenEncoder, prepared: Dataset, todo: list[int], n: int, work_dir: Path, *, shard_size: int,
         batch_size: int, device: torch.device, num_workers: int, bar, dup_views: bool) -> int:
    """Embed the shards ``todo``, writing each as it completes; returns the items embedded."""
    plan = {s: _shard_batches(s, n, shard_size, batch_size) for s in todo}
    loader = DataLoader(prepared, batch_sampler=[b for s in todo for b in plan[s]], num_workers=num_workers)
    batches = iter(loader)
    done, dim = 0, 0
    for s in todo:
        parts: dict[str, list[torch.Tensor]] = {"features": [], "hashes": [], "dup_features": []}
        kept: list[int] = []
        labels: list[int] = []
        bad: list[int] = []
        for positions in plan[s]:
            x, y, ok, digest = next(batches)
            keep = ok.bool()
            if keep.any():
                for key, value in _embed_batch(encoder, x[keep], device, dup_views).items():
                    parts[key].append(value)
                parts["hashes"].append(digest[keep])  # (n_ok, 16)
                dim = parts["features"][-1].shape[1]
            for p, label, k in zip(positions, y.tolist(), keep.tolist()):
                (kept if k else bad).append(p)
                if k:
                    labels.append(int(label))
            bar.update(len(positions))
        _write_shard(work_dir, s, parts, kept, labels, bad, dim)
        done += len(kept)
    return done


def embed_stream(encoder: FrozenEncoder, source: Dataset, ids: Sequence[str], work_dir: str | os.PathLike, *,
                 batch_size: int = 256, shard_size: int = SHARD_SIZE, device: str | torch.device = "cpu",
                 num_workers: int = 0, progress: bool = True, dup_views: bool = False) -> StreamResult:
    """Embed every item of ``source`` into shards under ``work_dir``, resuming an interrupted run.

    Args:
        encoder: the frozen model and its preprocessing.
        source: yields ``(PIL RGB image, label)``; an item that raises ValueError or OSError is unreadable.
        ids: one identifier (the file path) per item, in order.
        work_dir: folder of shards (created; kept until the caller removes it).
        batch_size: images per forward pass.
        shard_size: items per shard.
        device: where the forward pass runs.
        num_workers: DataLoader workers decoding the images.
        progress: show a tqdm bar.
        dup_views: also store each item's near-duplicate vector (``dup_features``, :mod:`.views`).

    Returns:
        A :class:`StreamResult`.

    Raises:
        ValueError: ``ids`` and ``source`` differ in length, bad sizes, or no item at all.
    """
    n = len(ids)
    if n != len(source):  # type: ignore[arg-type]
        raise ValueError(f"ids has {n} entries but the source holds {len(source)} items")  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("there are no images to embed")
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    work = Path(work_dir)
    _prepare_work_dir(work, _manifest(encoder, ids, shard_size, dup_views))
    n_shards = -(-n // shard_size)
    todo = [s for s in range(n_shards) if not _shard_file(work, s).is_file()]
    from tqdm.auto import tqdm

    done_before = n - sum(min(n, (s + 1) * shard_size) - s * shard_size for s in todo)
    dev = torch.device(device)
    encoder.to(dev)
    # disable=None: no bar when stderr is not a terminal (a log file would fill with redrawn lines)
    with tqdm(total=n, initial=done_before, desc="embedding", unit="img",
              disable=None if progress else True) as bar:
        now = _run(encoder, _Prepared(source, encoder.image_size, encoder.mean, encoder.std), todo, n, work,
                   shard_size=shard_size, batch_size=batch_size, device=dev, num_workers=num_workers, bar=bar,
                   dup_views=dup_views)
    count, bad, dim = 0, [], 0
    for shard in iter_shards(work):
        count += shard["features"].shape[0]
        bad += shard["bad"].tolist()
        dim = dim or (shard["features"].shape[1] if shard["features"].shape[0] else 0)
    return StreamResult(work, count, sorted(bad), dim, now)


def iter_shards(work_dir: str | os.PathLike) -> Iterator[dict[str, np.ndarray]]:
    """The shards of a finished run in order: dicts of ``features`` (n, D), ``positions``, ``labels``, ``bad``,
    ``hashes`` (n, 16) and ``dup_features`` (n, D; (0, D) unless embedded with ``dup_views``)."""
    for file in sorted(Path(work_dir).glob("shard_[0-9]*[0-9].npz")):
        with np.load(file) as z:
            yield {key: z[key] for key in ("features", "positions", "labels", "bad", "hashes", "dup_features")}
