"""Near-duplicate groups of an index with no threshold to guess.

* Exact duplicates (the same decoded pixels, :mod:`.pixels`) are grouped first, whatever the threshold.
* Near-duplicates are pairs whose score (:mod:`.dup_space`: whitened near-duplicate vectors, relative to
  each image's neighbourhood) reaches the threshold.
* ``threshold="auto"`` (the default) calibrates the threshold for a target precision (:mod:`.calibrate`)
  the first time and stores it, with its figures, in ``index.json`` (``near_duplicates``); later calls
  with the same target reuse it. The space is kept in ``near_duplicates.npz``. ``--update`` writes a
  new index without either, so a changed collection is calibrated again.
* Each group carries each member's score with the group's first image.

An index written before content hashes and near-duplicate vectors were stored gets them now (its
images are decoded and embedded once more, with its checkpoint) and keeps them.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.sources import ImageFiles
from .calibrate import SAMPLE_SIZE, Calibration, calibrate_index, check_target_precision
from .dup_space import SPACE_FILE, DuplicateSpace
from .duplicates import near_duplicate_groups
from .encoder import FrozenEncoder, load_frozen_encoder
from .index import DUP_VECTORS_FILE, HASHES_FILE, ImageIndex
from .pixels import HASH_BYTES, exact_duplicate_groups
from .stream import embed_stream, iter_shards

__all__ = ["DuplicateGroup", "NearDuplicates", "near_duplicates", "CALIBRATION_KEY"]

#: Where ``index.json`` keeps the calibration.
CALIBRATION_KEY = "near_duplicates"


@dataclass
class DuplicateGroup:
    """Images that are copies of one another.

    Attributes:
        paths: the images, in index order.
        scores: each one's score with ``paths[0]`` (None for the first).
        identical: whether each one has the same decoded pixels as ``paths[0]`` (False for the first).
    """

    paths: list[str]
    scores: list[float | None]
    identical: list[bool]


@dataclass
class NearDuplicates:
    """The result of :func:`near_duplicates`.

    Attributes:
        threshold: the score used.
        groups: the groups, ordered by their first image's row.
        calibration: how the threshold was chosen (None for a threshold given as a number).
        reused: whether the calibration was read from the index rather than made now.
    """

    threshold: float
    groups: list[DuplicateGroup] = field(default_factory=list)
    calibration: Calibration | None = None
    reused: bool = False

    def to_json(self) -> dict[str, Any]:
        """``{"threshold", "groups": [[path, ...]], "scores": [[null, ...]], "identical": [[...]],
        "calibration"}``."""
        out: dict[str, Any] = {"threshold": self.threshold, "groups": [g.paths for g in self.groups],
                               "scores": [g.scores for g in self.groups],
                               "identical": [g.identical for g in self.groups]}
        if self.calibration is not None:
            out["calibration"] = {**self.calibration.to_dict(), "reused": self.reused}
        return out


def _save_atomic(index: ImageIndex, name: str, array: np.ndarray) -> None:
    tmp = index.root / f"{name}.tmp-{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, index.root / name)


def _embed_missing(index: ImageIndex, encoder: FrozenEncoder, rows: np.ndarray, device: str, progress: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Content hashes and near-duplicate vectors of ``rows``, embedded now; returns (hashes, vectors, readable)."""
    from ..device import resolve_device

    paths = [index.paths[r] for r in rows.tolist()]
    work = index.root.with_name(index.root.name + ".dup.partial")
    res = embed_stream(encoder, ImageFiles([(p, -1) for p in paths]), paths, work,
                       device=resolve_device(device, "--device"), progress=progress, dup_views=True, num_workers=0)
    dim = int(index.info["dim"])
    hashes, vectors = np.zeros((len(rows), HASH_BYTES), np.uint8), np.zeros((len(rows), dim), np.float32)
    readable = np.zeros(len(rows), bool)
    for shard in iter_shards(res.work_dir):
        at = shard["positions"]
        hashes[at] = shard["hashes"]
        vectors[at] = torch.nn.functional.normalize(torch.from_numpy(shard["dup_features"]), dim=1).numpy()
        readable[at] = True
    shutil.rmtree(res.work_dir, ignore_errors=True)
    return hashes, vectors, readable


def _hashes_and_vectors(index: ImageIndex, encoder_of, device: str, progress: bool
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The index's content hashes and near-duplicate vectors, completing (and storing) what it lacks.

    Rows that cannot be read any more keep a zero hash (matching nothing) and fall back to their h.
    """
    stored_h, stored_v = index.pixel_hashes(), index.dup_vectors()
    hashes = np.zeros((len(index), HASH_BYTES), np.uint8) if stored_h is None else np.array(stored_h)
    vectors = np.zeros((len(index), int(index.info["dim"])), np.float32) if stored_v is None else np.array(stored_v)
    missing = np.flatnonzero(~hashes.any(axis=1) | ~vectors.any(axis=1))
    if len(missing):
        if progress:
            print(f"embedding the near-duplicate vectors of {len(missing)} images of this index (once; kept in "
                  f"{DUP_VECTORS_FILE} and {HASHES_FILE})", file=sys.stderr)
        new_h, new_v, readable = _embed_missing(index, encoder_of(), missing, device, progress)
        hashes[missing[readable]] = new_h[readable]
        vectors[missing[readable]] = new_v[readable]
        _save_atomic(index, HASHES_FILE, hashes)
        _save_atomic(index, DUP_VECTORS_FILE, vectors)
    unknown = ~vectors.any(axis=1)
    vectors[unknown] = np.asarray(index.vectors[np.flatnonzero(unknown)])  # unreadable now: their h
    return hashes, vectors


def _space(index: ImageIndex, vectors: np.ndarray) -> DuplicateSpace:
    space = DuplicateSpace.load(index.root / SPACE_FILE, len(index), int(index.info["dim"]))
    if space is None:
        space = DuplicateSpace.fit(vectors)
        space.save(index.root / SPACE_FILE)
    return space


def _stored_calibration(index: ImageIndex, target: float, sample: int, seed: int) -> Calibration | None:
    stored = index.info.get(CALIBRATION_KEY)
    if not isinstance(stored, dict):
        return None
    try:
        cal = Calibration.from_dict(stored)
    except TypeError:  # an older or foreign record: calibrate again
        return None
    same = (cal.target_precision == target and cal.sample == sample and cal.seed == seed
            and cal.count == len(index) and cal.fingerprint == index.fingerprint)
    return cal if same else None


def _store_calibration(index: ImageIndex, cal: Calibration) -> None:
    index.info[CALIBRATION_KEY] = cal.to_dict()
    tmp = index.root / f"index.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(index.info, indent=2) + "\n")
    os.replace(tmp, index.root / "index.json")


def _check_threshold(threshold: Any) -> float | str:
    if threshold == "auto":
        return threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"the near-duplicate threshold must be 'auto' or a score (a number; the calibrated "
                         f"threshold is printed by 'auto'), got {threshold!r}")
    return float(threshold)


def near_duplicates(index: str | os.PathLike | ImageIndex, threshold: float | str = "auto", *,
                    target_precision: float = 0.95, checkpoint: str | os.PathLike | None = None,
                    device: str = "auto", sample: int = SAMPLE_SIZE, seed: int = 0, recalibrate: bool = False,
                    progress: bool = False) -> NearDuplicates:
    """Groups of exact and near-duplicate images in an index.

    Args:
        index: an index folder or a loaded :class:`ImageIndex`.
        threshold: ``"auto"`` (calibrated, see the module docstring) or a score (:mod:`.dup_space`).
        target_precision: what ``auto`` calibrates for, in (0, 1).
        checkpoint: the index's model (default: the checkpoint the index records); needed to calibrate, and
            for an index written before near-duplicate vectors were stored.
        device: where the encoder runs.
        sample, seed: the calibration sample's size and seed.
        recalibrate: calibrate again even when the index holds a calibration for this target.
        progress: progress bars and notes on stderr.

    Returns:
        A :class:`NearDuplicates`.

    Raises:
        ValueError: an empty or damaged index, a bad threshold or target precision, a threshold so low it links
            most of the collection; :class:`contrastkit.search.IndexMismatchError` for another model.
    """
    target = check_target_precision(target_precision)
    t_arg = _check_threshold(threshold)
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ValueError(f"the calibration sample must be a positive number of images, got {sample!r}")
    idx = index if isinstance(index, ImageIndex) else ImageIndex.load(index, backend="torch")
    if len(idx) == 0:
        raise ValueError(f"index {idx.root} holds no images; there is nothing to compare")
    encoder: list[FrozenEncoder] = []

    def encoder_of() -> FrozenEncoder:  # loaded once, and only when needed
        if not encoder:
            encoder.append(load_frozen_encoder(checkpoint or idx.info["checkpoint"],
                                               projection=idx.info["what"] == "z"))
            idx.check_encoder(encoder[0])
        return encoder[0]

    hashes, vectors = _hashes_and_vectors(idx, encoder_of, device, progress)
    exact = exact_duplicate_groups(hashes)
    space = _space(idx, vectors)
    cal, reused = None, False
    if t_arg == "auto":
        cal = None if recalibrate else _stored_calibration(idx, target, sample, seed)
        reused = cal is not None
        if cal is None:
            from ..device import resolve_device

            cal = calibrate_index(idx, encoder_of(), space, vectors, target, sample=sample, seed=seed,
                                  device=resolve_device(device, "--device"), hashes=hashes)
            _store_calibration(idx, cal)
    t = cal.threshold if cal is not None else float(t_arg)
    z = space.transform(vectors)  # (N, D)
    groups = []
    for g in near_duplicate_groups(z, t, linked=exact, score=space.scores):
        at = torch.tensor(g)
        scores = space.scores((z[at] @ z[g[0]])[:, None], at, at[:1])[:, 0].tolist()  # (len(g),)
        same = [bool(i and hashes[r].any() and np.array_equal(hashes[r], hashes[g[0]])) for i, r in enumerate(g)]
        groups.append(DuplicateGroup([idx.paths[r] for r in g], [None] + [round(s, 6) for s in scores[1:]], same))
    return NearDuplicates(t, groups, cal, reused)
