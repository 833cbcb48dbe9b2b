"""A search index of images: L2-normalised h of each image, its path, and the model's identity.

An index is a folder:

* ``index.json``: format, count, dim, what (h or z), kind (flat, ivf, hnsw), the checkpoint and its
  fingerprint (:mod:`contrastkit.search.encoder`), the image folder, unreadable files, and for
  IVF/HNSW the search parameter (``nprobe``, ``ef_search``) chosen for a recall target and the
  recall@10 against exact search measured for it on held-out queries (:mod:`.tuning`);
* ``vectors.npy``: float32 (N, D), row i the unit-length vector of image i (memory-mapped on load);
* ``paths.json``: the N absolute image paths;
* ``pixel_hashes.npy``: uint8 (N, 16), the content hash of each image's decoded pixels (:mod:`.pixels`);
* ``dup_vectors.npy``: float32 (N, D), each image's near-duplicate vector (h averaged over slightly moved
  views, :mod:`.views`; unit rows). These two are absent in indexes written before them; the
  near-duplicate search computes them once when needed (rows of zeros: not known);
* ``index.json``'s ``near_duplicates``: the calibrated near-duplicate threshold and its figures
  (:mod:`.calibrate`), written by the first ``search --near-duplicates`` and dropped by ``--update``;
* ``faiss.index``: for ``ivf`` and ``hnsw``, the FAISS structure, opened memory-mapped (``flat`` needs
  none: exact search runs in FAISS when it is installed, else as chunked matrix products in torch).

Loading an index reads ``index.json`` and ``paths.json``; the vectors and the FAISS structure are
memory-mapped, so a million-image index opens without reading its vectors into memory.

:func:`build_index` writes the folder under a temporary name and renames it into place, so an
index is either complete or absent; embedding itself is resumable (:mod:`.stream`), and
``update=True`` embeds only the images not in the index yet.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.sources import IMAGE_EXTENSIONS, ImageFiles
from .backends import KINDS, FaissSearcher, exact_topk, faiss_available, require_faiss
from .tuning import build_tuned, check_recall
from .encoder import FrozenEncoder, load_frozen_encoder
from .pixels import HASH_BYTES
from .stream import SHARD_SIZE, embed_stream, iter_shards

__all__ = ["ImageIndex", "IndexMismatchError", "build_index", "list_images", "INDEX_FORMAT", "BACKENDS",
           "HASHES_FILE", "DUP_VECTORS_FILE"]

INDEX_FORMAT = "contrastkit-index"
_VERSION = 1
BACKENDS = ("auto", "torch", "faiss")
HASHES_FILE = "pixel_hashes.npy"
DUP_VECTORS_FILE = "dup_vectors.npy"


class IndexMismatchError(ValueError):
    """A query or an update through another model than the one the index was built with."""


def list_images(folder: str | os.PathLike, what: str = "--images") -> list[str]:
    """The image files under ``folder`` (recursively), as sorted absolute paths.

    Raises:
        ValueError: ``folder`` is not a folder, or holds no image file.
    """
    path = Path(os.path.expanduser(os.fspath(folder)))
    if not path.is_dir():
        raise ValueError(f"{what} {os.fspath(folder)!r} is not a folder")
    files = sorted(str(p.resolve()) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{what} {os.fspath(folder)!r} holds no image files (looked for "
                         f"{', '.join(IMAGE_EXTENSIONS)}, in subfolders too)")
    return files


def _resolve_backend(backend: str, kind: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if kind != "flat" or backend == "faiss":
        require_faiss(f"an index of kind {kind!r}" if kind != "flat" else "backend 'faiss'")
        return "faiss"
    if backend == "auto":
        return "faiss" if faiss_available() else "torch"
    return backend


class ImageIndex:
    """A loaded index (see the module docstring for its files).

    Attributes:
        root: the index folder.
        info: the contents of ``index.json``.
        paths: the image path of each row.
        vectors: (N, D) float32 unit rows, memory-mapped.
        backend: ``torch`` or ``faiss``, what answers queries.
    """

    def __init__(self, root: Path, info: dict, paths: list[str], vectors: np.ndarray, backend: str = "auto",
                 nprobe: int | None = None) -> None:
        self.root, self.info, self.paths, self.vectors = root, info, paths, vectors
        self.backend = _resolve_backend(backend, info["kind"])
        self._searcher: FaissSearcher | None = None
        self._tensor: torch.Tensor | None = None  # the vectors in memory, for the torch backend
        self._nprobe = nprobe or int(info.get("nprobe") or 16)
        self._ef_search = int(info.get("ef_search") or 64)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def fingerprint(self) -> str:
        return self.info["fingerprint"]

    @classmethod
    def load(cls, root: str | os.PathLike, backend: str = "auto", nprobe: int | None = None) -> "ImageIndex":
        """Open an index folder written by :func:`build_index`.

        Raises:
            ValueError: the folder is missing, is not an index, or its files disagree.
        """
        path = Path(os.path.expanduser(os.fspath(root)))
        restore_interrupted_swap(path)
        if not (path / "index.json").is_file():
            what = "does not exist" if not path.exists() else "is not a contrastkit index (no index.json)"
            raise ValueError(f"index {os.fspath(root)!r} {what}; build one with: contrastkit index --checkpoint "
                             f"CK --images DIR --out {os.fspath(root)}")
        try:
            info = json.loads((path / "index.json").read_text())
            paths = json.loads((path / "paths.json").read_text())
            vectors = np.load(path / "vectors.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ValueError(f"index {os.fspath(root)!r} is damaged ({type(exc).__name__}: {exc}); build it again")
        if info.get("format") != INDEX_FORMAT or not (len(paths) == info.get("count") == vectors.shape[0]):
            raise ValueError(f"index {os.fspath(root)!r} is damaged: index.json says count={info.get('count')}, "
                             f"paths.json has {len(paths)} entries, vectors.npy has shape {vectors.shape}")
        return cls(path, info, paths, vectors, backend, nprobe)

    def _optional_array(self, name: str, width: int, dtype) -> np.ndarray | None:
        file = self.root / name
        if not file.is_file():
            return None
        array = np.load(file, mmap_mode="r")
        if array.shape != (len(self), width) or array.dtype != dtype:
            raise ValueError(f"index {self.root} is damaged: {name} has shape {array.shape} ({array.dtype}), "
                             f"expected ({len(self)}, {width}) {np.dtype(dtype).name}; build it again")
        return array

    def pixel_hashes(self) -> np.ndarray | None:
        """The content hash of each row's pixels (rows of zeros where unknown), or None for an index written
        before hashes were stored. Shape: -> (N, 16) uint8, memory-mapped."""
        return self._optional_array(HASHES_FILE, HASH_BYTES, np.uint8)

    def dup_vectors(self) -> np.ndarray | None:
        """Each row's near-duplicate vector (rows of zeros where unknown), or None for an index written before
        they were stored. Shape: -> (N, D) float32, memory-mapped."""
        return self._optional_array(DUP_VECTORS_FILE, int(self.info["dim"]), np.float32)

    def _faiss(self) -> FaissSearcher:
        if self._searcher is None:
            dim = int(self.info["dim"])
            if self.info["kind"] == "flat":
                self._searcher = FaissSearcher("flat", dim).build(np.asarray(self.vectors))
            else:
                self._searcher = FaissSearcher.load(str(self.root / "faiss.index"), self.info["kind"], dim,
                                                    nprobe=self._nprobe, ef_search=self._ef_search)
        return self._searcher

    def search_vectors(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` rows by cosine similarity to each (unit) query.

        Raises:
            ValueError: k is not in [1, N], or the queries have another dimension.

        Shape:
            queries (Q, D) -> similarities (Q, k), indices (Q, k).
        """
        check_k(k, len(self))
        if queries.dim() != 2 or queries.shape[1] != int(self.info["dim"]):
            raise ValueError(f"queries must have shape (Q, {self.info['dim']}), got {tuple(queries.shape)}")
        if self.backend == "faiss":
            return self._faiss().search(queries, k)
        if self._tensor is None:
            self._tensor = torch.from_numpy(np.array(self.vectors, np.float32))  # (N, D), read once
        return exact_topk(self._tensor, queries, k)

    def check_encoder(self, encoder: FrozenEncoder) -> None:
        """Refuse a model other than the index's own.

        Raises:
            IndexMismatchError: naming both checkpoints.
        """
        if encoder.fingerprint != self.fingerprint:
            raise IndexMismatchError(
                f"index {self.root} was built with checkpoint {self.info['checkpoint']} "
                f"({self.info['what']}, fingerprint {self.fingerprint[:12]}); checkpoint {encoder.checkpoint} "
                f"({encoder.what}, fingerprint {encoder.fingerprint[:12]}) is another model, whose vectors are not "
                f"comparable. Search with the index's checkpoint, or build an index with this one")


def check_k(k: Any, n: int) -> int:
    """``k`` as a neighbour count for an index of ``n`` entries.

    Raises:
        ValueError: k is not an int in [1, n].
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"k={k} is larger than the index, which holds {n} images; use k <= {n}")
    return k


def _unit(x: np.ndarray) -> np.ndarray:
    return F.normalize(torch.from_numpy(np.asarray(x, np.float32)), dim=1).numpy()  # (n, D)


def _write_vectors(tmp: Path, old: ImageIndex | None, work: Path, new_paths: Sequence[str]
                   ) -> tuple[list[str], int]:
    """vectors.npy and paths.json of the old rows then the new shards' rows; returns (paths, dim)."""
    shards = list(iter_shards(work))
    dims = {s["features"].shape[1] for s in shards if s["features"].shape[0]}
    dim = dims.pop() if dims else 0
    if old is not None and dim and dim != int(old.info["dim"]):
        raise ValueError(f"new vectors have D={dim} but the index holds D={old.info['dim']}")
    if old is not None and not dim:
        dim = int(old.info["dim"])
    n_old = len(old) if old is not None else 0
    n_new = sum(s["features"].shape[0] for s in shards)
    out = np.lib.format.open_memmap(tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=(n_old + n_new, dim))
    dup = np.lib.format.open_memmap(tmp / DUP_VECTORS_FILE, mode="w+", dtype=np.float32, shape=(n_old + n_new, dim))
    hashes = np.zeros((n_old + n_new, HASH_BYTES), np.uint8)  # rows of zeros: not known (an old index's)
    old_hashes = old.pixel_hashes() if old is not None else None
    old_dup = old.dup_vectors() if old is not None else None
    for lo in range(0, n_old, 65536):
        hi = min(n_old, lo + 65536)
        out[lo:hi] = old.vectors[lo:hi]  # type: ignore[union-attr]
        if old_hashes is not None:
            hashes[lo:hi] = old_hashes[lo:hi]
        dup[lo:hi] = old_dup[lo:hi] if old_dup is not None else 0.0
    paths = list(old.paths) if old is not None else []
    row = n_old
    for s in shards:
        m = s["features"].shape[0]
        out[row:row + m] = _unit(s["features"])
        hashes[row:row + m] = s["hashes"]
        if m:
            dup[row:row + m] = _unit(s["dup_features"])
        paths += [new_paths[p] for p in s["positions"].tolist()]
        row += m
    out.flush()
    dup.flush()
    del out, dup
    np.save(tmp / HASHES_FILE, hashes)
    (tmp / "paths.json").write_text(json.dumps(paths))
    return paths, dim


def _approximate_structure(tmp: Path, kind: str, nlist: int | None, nprobe: int | None, recall: float,
                           seed: int = 0) -> dict:
    """Build and save the FAISS IVF/HNSW structure, its search parameter tuned for ``recall`` (or ``nprobe`` as
    given), and its recall@10 on held-out queries."""
    vectors = np.load(tmp / "vectors.npy", mmap_mode="r")
    searcher, tuned = build_tuned(vectors, kind, recall, nlist=nlist, seed=seed,
                                  fixed=nprobe if kind == "ivf" else None)
    searcher.save(str(tmp / "faiss.index"))
    extra: dict[str, Any] = {"recall_at_10": tuned.to_dict()}
    if kind == "ivf":
        extra.update(nlist=int(searcher.nlist), nprobe=int(tuned.value))
    else:
        extra.update(ef_search=int(tuned.value))
    return extra


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``; an existing ``out`` is moved aside first, then removed."""
    if out.exists():
        aside = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, aside)
        os.replace(tmp, out)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, out)


def restore_interrupted_swap(out: Path) -> bool:
    """Put back the index that an ``--update`` killed between its two renames left at ``OUT.old-PID``.

    Returns whether one was restored (only when ``out`` itself is missing; the newest such folder wins).
    """
    if out.exists():
        return False
    asides = [p for p in out.parent.glob(f"{glob.escape(out.name)}.old-*") if (p / "index.json").is_file()]
    if not asides:
        return False
    aside = max(asides, key=lambda p: p.stat().st_mtime)
    os.replace(aside, out)
    print(f"note: restored the index {out} from {aside.name}, left by an interrupted --update", file=sys.stderr)
    return True


def _check_build_options(kind: str, backend: str, out: Path, update: bool, checkpoint) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _resolve_backend(backend, kind)
    if update and not (out / "index.json").is_file():
        raise ValueError(f"--update needs an existing index at {out}; build one first (without --update)")
    if not update and out.exists():
        raise ValueError(f"--out {out} already exists; pass --update to add new images to that index, or choose "
                         f"another --out")
    if not update and checkpoint is None:
        raise ValueError("a new index needs --checkpoint (the model that embeds the images)")


def build_index(checkpoint: str | os.PathLike | None, images: str | os.PathLike, out: str | os.PathLike, *,
                kind: str = "flat", update: bool = False, projection: bool = False, device: str = "auto",
                batch_size: int = 256, num_workers: int = 2, progress: bool = True, nlist: int | None = None,
                nprobe: int | None = None, backend: str = "auto", shard_size: int = SHARD_SIZE,
                recall: float = 0.95) -> dict[str, Any]:
    """Embed every image under ``images`` and write a search index at ``out``.

    Args:
        checkpoint: the ``pretrain`` checkpoint (or run folder) that embeds the images; with ``update`` it may be
            None (the index's own) and otherwise must be the index's model.
        images: a folder; every image file under it (recursively) is indexed.
        out: the index folder to create (or, with ``update``, to extend).
        kind: ``flat`` (exact), ``ivf`` or ``hnsw`` (FAISS, approximate; recall@10 is measured and stored).
        update: add the images not in the index yet, without embedding the others again.
        projection: index z = g(h) instead of h.
        device: where the encoder runs (``auto``: CUDA when available).
        batch_size, num_workers, progress, shard_size: embedding options (:func:`contrastkit.search.embed_stream`).
        nlist, nprobe: IVF inverted lists (default about 4 sqrt(N)) and lists visited per query (default: the
            fewest that reach ``recall``).
        recall: for ``ivf`` and ``hnsw``, the recall@10 (against exact search, on held-out queries) that the
            search parameter (nprobe, efSearch) is chosen for.
        backend: for a flat index, ``auto`` (FAISS when installed), ``torch`` or ``faiss``.

    Returns:
        A summary: index, count, added, bad_count, bad_files, kind, dim, build_s (and for ivf/hnsw recall_at_10
        and the search parameter chosen).

    Raises:
        ValueError: an empty or missing folder, an existing ``out`` without ``update``, no readable image,
            bad options; :class:`IndexMismatchError` for an update through another checkpoint.
        RuntimeError: FAISS is needed (ivf, hnsw, backend faiss) but not installed.
    """
    from ..device import resolve_device

    t0 = time.perf_counter()
    out = Path(os.path.expanduser(os.fspath(out)))
    if update:
        restore_interrupted_swap(out)
    _check_build_options(kind, backend, out, update, checkpoint)
    check_recall(recall)
    dev = resolve_device(device, "--device")
    old = ImageIndex.load(out, backend="torch") if update else None
    if old is not None:
        kind = old.info["kind"]
        projection = old.info["what"] == "z"
    encoder = load_frozen_encoder(checkpoint if checkpoint is not None else old.info["checkpoint"],  # type: ignore
                                  projection=projection)
    if old is not None:
        old.check_encoder(encoder)
    known = set(old.paths) if old is not None else set()
    new_paths = [p for p in list_images(images) if p not in known]
    summary: dict[str, Any] = {"index": str(out), "kind": kind, "added": 0}
    if not new_paths:  # nothing to add: the index stays as it is
        return {**summary, "count": len(old), "dim": int(old.info["dim"]), "bad_count": 0,  # type: ignore
                "bad_files": [], "build_s": round(time.perf_counter() - t0, 3)}
    work = out.with_name(out.name + ".partial")
    res = embed_stream(encoder, ImageFiles([(p, -1) for p in new_paths]), new_paths, work, batch_size=batch_size,
                       shard_size=shard_size, device=dev, num_workers=num_workers, progress=progress,
                       dup_views=True)
    bad_files = [new_paths[i] for i in res.bad]
    if res.count == 0 and old is None:
        raise ValueError(f"none of the {len(new_paths)} image files under {images} could be read "
                         f"(first: {bad_files[0]}); no index was written")
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        paths, dim = _write_vectors(tmp, old, res.work_dir, new_paths)
        info = {"format": INDEX_FORMAT, "version": _VERSION, "count": len(paths), "dim": dim, "what": encoder.what,
                "kind": kind, "checkpoint": encoder.checkpoint, "fingerprint": encoder.fingerprint,
                "image_size": encoder.image_size, "images": str(Path(os.path.expanduser(os.fspath(images))).resolve()),
                "bad_files": bad_files, "normalised": "L2"}
        if kind != "flat":
            info.update(_approximate_structure(tmp, kind, nlist, nprobe, recall))
        (tmp / "index.json").write_text(json.dumps(info, indent=2) + "\n")
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(res.work_dir, ignore_errors=True)
    summary.update(count=len(paths), added=res.count, dim=dim, bad_count=len(bad_files), bad_files=bad_files,
                   build_s=round(time.perf_counter() - t0, 3))
    if "recall_at_10" in info:
        r = info["recall_at_10"]
        summary.update(recall_at_10=r["value"], recall_target=r["target"], recall_reached=r["reached"],
                       **{r["param"]: r["param_value"]})
    return summary
