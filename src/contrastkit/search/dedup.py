"""Near-duplicate groups of an index with no threshold to guess.

* Exact duplicates (the same decoded pixels, :mod:`.pixels`) are grouped first, whatever the threshold.
* Near-duplicates are pairs whose score (:mod:`.dup_space`: whitened near-duplicate vectors, relative to
  each image's neighbourhood) reaches the threshold.
* ``threshold="auto"`` (the default) calibrates the threshold for a target precision (:mod:`.calibrate`)
  the first time and stores it, with its figures, in ``index.json`` (``near_duplicates``); later calls
  with the same target reuse it. The space is kept in ``near_duplicates.<g>.npz``. ``--update`` writes a
  new index without either, so a changed collection is calibrated again.
* Each group carries each member's score with the group's first image, and its cosine similarity (of h) with it.

An index written before content hashes and near-duplicate vectors were stored gets them now (its
images are decoded and embedded once more, with its checkpoint). What is computed is kept in the
index as a generation of its own, under the index's writer lock (:mod:`.additions`); when the index
cannot be written, the groups are still found and a note says what was not kept.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.sources import ImageFiles
from ..runtime import resolve_device
from .additions import IndexAdditions
from .calibrate import SAMPLE_SIZE, Calibration, calibrate_index, check_target_precision
from .dup_space import DuplicateSpace
from .duplicates import near_duplicate_groups
from .encoder import FrozenEncoder, load_frozen_encoder
from .index import ImageIndex
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
        scores: each one's score with ``paths[0]`` (None for the first): what the threshold applies to.
        similarities: each one's cosine similarity of h with ``paths[0]`` (None for the first), as ``search
            --query`` reports it.
        identical: whether each one has the same decoded pixels as ``paths[0]`` (False for the first).
    """

    paths: list[str]
    scores: list[float | None]
    identical: list[bool]
    similarities: list[float | None] = field(default_factory=list)


@dataclass
class NearDuplicates:
    """The result of :func:`near_duplicates`.

    Attributes:
        threshold: the score used.
        groups: the groups, ordered by their first image's row.
        calibration: how the threshold was chosen (None for a threshold given as a number).
        reused: whether the calibration was read from the index rather than made now.
        not_stored: None, or why what this search computed (calibration, near-duplicate vectors) was not kept in
            the index.
    """

    threshold: float
    groups: list[DuplicateGroup] = field(default_factory=list)
    calibration: Calibration | None = None
    reused: bool = False
    not_stored: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"threshold", "groups": [[path, ...]], "scores": [[null, ...]], "similarities": [[null, ...]],
        "identical": [[...]], "calibration"}``."""
        out: dict[str, Any] = {"threshold": self.threshold, "groups": [g.paths for g in self.groups],
                               "scores": [g.scores for g in self.groups],
                               "similarities": [g.similarities for g in self.groups],
                               "identical": [g.identical for g in self.groups]}
        if self.calibration is not None:
            out["calibration"] = {**self.calibration.to_dict(), "reused": self.reused}
        return out


def _embed_missing(index: ImageIndex, encoder: FrozenEncoder, rows: np.ndarray, device: str, progress: bool,
                   work: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Content hashes and near-duplicate vectors of ``rows``, embedded now in shards under ``work``; returns
    (hashes, vectors, readable)."""
    paths = [index.paths[r] for r in rows.tolist()]
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


def _missing_rows(index: ImageIndex) -> np.ndarray:
    """Rows whose content hash or near-duplicate vector the index does not hold."""
    stored_h, stored_v = index.pixel_hashes(), index.dup_vectors()
    if stored_h is None or stored_v is None:
        return np.arange(len(index))
    known = np.zeros(len(index), bool)
    for lo in range(0, len(index), 65536):  # a block at a time: the files are memory-mapped
        known[lo:lo + 65536] = stored_h[lo:lo + 65536].any(axis=1) & stored_v[lo:lo + 65536].any(axis=1)
    return np.flatnonzero(~known)


def _hashes_and_vectors(add: IndexAdditions, encoder_of, device: str, progress: bool,
                        writers: dict) -> tuple[np.ndarray, np.ndarray]:
    """The index's content hashes and near-duplicate vectors, completing what it lacks (the completed files go
    to ``writers``, to be stored).

    Rows that cannot be read any more keep a zero hash (matching nothing) and fall back to their h.
    """
    index = add.index
    stored_h, stored_v = index.pixel_hashes(), index.dup_vectors()
    hashes = np.zeros((len(index), HASH_BYTES), np.uint8) if stored_h is None else np.array(stored_h)
    vectors = np.zeros((len(index), int(index.info["dim"])), np.float32) if stored_v is None else np.array(stored_v)
    missing = _missing_rows(index)
    if len(missing):
        if progress:
            print(f"embedding the near-duplicate vectors of {len(missing)} images of this index (once; kept in "
                  f"the index)", file=sys.stderr)
        new_h, new_v, readable = _embed_missing(index, encoder_of(), missing, device, progress, add.work_dir())
        hashes[missing[readable]] = new_h[readable]
        vectors[missing[readable]] = new_v[readable]
        known_h, known_v = hashes.copy(), vectors.copy()  # zeros where unreadable: not known
        writers["hashes"] = lambda path: np.save(path, known_h)
        writers["dup_vectors"] = lambda path: np.save(path, known_v)
    unknown = ~vectors.any(axis=1)
    vectors[unknown] = np.asarray(index.vectors[np.flatnonzero(unknown)])  # unreadable now: their h
    return hashes, vectors


def _space(index: ImageIndex, vectors: np.ndarray, refit: bool, writers: dict) -> DuplicateSpace:
    """The index's near-duplicate space: the stored one, or fitted now (and added to ``writers``)."""
    name = index.files.get("space")
    space = None if refit or not name else DuplicateSpace.load(index.root / name, len(index),
                                                                 int(index.info["dim"]))
    if space is None:
        space = DuplicateSpace.fit(vectors)
        writers["space"] = space.save
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


def _check_threshold(threshold: Any) -> float | str:
    if threshold == "auto":
        return threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"the near-duplicate threshold must be 'auto' or a score (a number; the calibrated "
                         f"threshold is printed by 'auto'), got {threshold!r}")
    return float(threshold)


def _needs_writing(index: ImageIndex, auto: bool, target: float, sample: int, seed: int, recalibrate: bool) -> bool:
    """Whether the index lacks something this search computes and keeps."""
    space = index.files.get("space")
    return (len(_missing_rows(index)) > 0 or not space or not (index.root / space).is_file()
            or (auto and (recalibrate or _stored_calibration(index, target, sample, seed) is None)))


def near_duplicates(index: str | os.PathLike | ImageIndex, threshold: float | str = "auto", *,
                    target_precision: float = 0.95, checkpoint: str | os.PathLike | None = None,
                    device: str = "auto", sample: int = SAMPLE_SIZE, seed: int = 0, recalibrate: bool = False,
                    progress: bool = False, store: bool = True) -> NearDuplicates:
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
        store: keep what is computed in the index (:mod:`.additions`); False leaves the index as it is.

    Returns:
        A :class:`NearDuplicates` (``not_stored`` says why what was computed was not kept, if it was not).

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
    writing = _needs_writing(idx, t_arg == "auto", target, sample, seed, recalibrate)
    with IndexAdditions(idx, store and writing) as add:
        encoder: list[FrozenEncoder] = []

        def encoder_of() -> FrozenEncoder:  # loaded once, and only when needed
            if not encoder:
                encoder.append(load_frozen_encoder(checkpoint or add.index.info["checkpoint"],
                                                   projection=add.index.info["what"] == "z"))
                add.index.check_encoder(encoder[0])
            return encoder[0]

        writers: dict = {}
        hashes, vectors = _hashes_and_vectors(add, encoder_of, device, progress, writers)
        space = _space(add.index, vectors, bool(writers), writers)
        cal = None if t_arg != "auto" or recalibrate else _stored_calibration(add.index, target, sample, seed)
        reused = cal is not None
        if t_arg == "auto" and cal is None:
            cal = calibrate_index(add.index, encoder_of(), space, vectors, target, sample=sample, seed=seed,
                                  device=resolve_device(device, "--device"), hashes=hashes)
        if writers or (cal is not None and not reused):
            add.publish(writers, {CALIBRATION_KEY: cal.to_dict()} if cal is not None else {})
        not_stored = add.reason if writing and not add.can_store else None
        idx = add.index
    t = cal.threshold if cal is not None else float(t_arg)
    groups = _groups(idx, space, vectors, hashes, t)
    return NearDuplicates(t, groups, cal, reused, not_stored)


def _groups(index: ImageIndex, space: DuplicateSpace, vectors: np.ndarray, hashes: np.ndarray, threshold: float
            ) -> list[DuplicateGroup]:
    """The groups at ``threshold``: exact copies first, then pairs scoring at least ``threshold``, joined."""
    z = space.transform(vectors)  # (N, D)
    groups = []
    for g in near_duplicate_groups(z, threshold, linked=exact_duplicate_groups(hashes), score=space.scores):
        at = torch.tensor(g)
        scores = space.scores((z[at] @ z[g[0]])[:, None], at, at[:1])[:, 0].tolist()  # (len(g),)
        h = np.asarray(index.vectors[g], np.float32)  # (len(g), D) unit rows
        cosines = (h @ h[0]).tolist()  # (len(g),)
        same = [bool(i and hashes[r].any() and np.array_equal(hashes[r], hashes[g[0]])) for i, r in enumerate(g)]
        groups.append(DuplicateGroup([index.paths[r] for r in g], [None] + [round(s, 6) for s in scores[1:]], same,
                                     [None] + [round(c, 6) for c in cosines[1:]]))
    return groups
