"""A search index of images: L2-normalised h of each image, its path, and the model's identity.

An index is a folder that contrastkit owns (its marker, ``.contrastkit.json``, lists every file):

* ``index.json``: format, count, dim, what (h or z), kind (flat, ivf, hnsw), the checkpoint, its training step
  and its fingerprint (:mod:`contrastkit.search.encoder`), the image folder, unreadable files, for IVF/HNSW the
  recall@10 against exact search measured when it was built, and ``files``: the names of the data files below.
  It is replaced atomically and is what makes a version of the index current.
* ``vectors.<g>.npy``: float32 (N, D), row i the unit-length vector of image i (memory-mapped on load);
* ``paths.<g>.json``: the N absolute image paths;
* ``stats.<g>.json``: each image's [size, modification time in ns] when it was embedded (what ``--update``
  compares);
* ``pixel_hashes.<g>.npy``: uint8 (N, 16), the content hash of each image's decoded pixels (:mod:`.pixels`);
* ``dup_vectors.<g>.npy``: float32 (N, D), each image's near-duplicate vector (h averaged over slightly moved
  views, :mod:`.views`; unit rows);
* ``faiss.<g>.index``: for ``ivf`` and ``hnsw``, the FAISS structure, opened memory-mapped, with the search
  parameter (``nprobe``, ``ef_search``) chosen for a recall target and the recall@10 measured for it on held-out
  queries in ``index.json`` (:mod:`.tuning`); ``flat`` needs none: exact search runs in FAISS when it is
  installed, else as chunked matrix products in torch;
* ``near_duplicates.<g>.npz`` and ``index.json``'s ``near_duplicates``: the near-duplicate space
  (:mod:`.dup_space`) and the calibrated threshold with its figures (:mod:`.calibrate`), written by the first
  ``search --near-duplicates`` as a generation of their own (:mod:`.dedup`); a build or update leaves them out,
  so a changed collection is calibrated again.

``<g>`` is the index's generation: each build or update writes the next one beside the current one, and then
replaces ``index.json`` (:mod:`.build`). ``index.json``'s ``files`` names each data file, so a generation may keep
files of an earlier one (near-duplicates add theirs to the vectors they were computed from). An index written
before generations existed has ``vectors.npy``, ``paths.json`` and ``faiss.index`` and no stats; one written before
hashes and near-duplicate vectors were stored gets them from the first near-duplicate search.

Loading an index reads ``index.json`` and the paths; the vectors and the FAISS structure are memory-mapped, so a
million-image index opens without reading its vectors into memory.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.sources import IMAGE_EXTENSIONS
from .backends import FaissSearcher, exact_topk, faiss_available, require_faiss
from .encoder import FrozenEncoder
from .pixels import HASH_BYTES

__all__ = ["ImageIndex", "IndexMismatchError", "list_images", "INDEX_FORMAT", "BACKENDS", "VERSION", "data_files",
           "resolve_backend", "check_k", "DATA_KEYS"]

INDEX_FORMAT = "contrastkit-index"
VERSION = 2
BACKENDS = ("auto", "torch", "faiss")


class IndexMismatchError(ValueError):
    """A query or an update through another model than the one the index was built with."""


#: each data file of an index: its key in ``index.json``'s ``files``, and its name as ``<stem>.<g><suffix>``
DATA_KEYS = {"vectors": ("vectors", ".npy"), "paths": ("paths", ".json"), "stats": ("stats", ".json"),
             "faiss": ("faiss", ".index"), "hashes": ("pixel_hashes", ".npy"),
             "dup_vectors": ("dup_vectors", ".npy"), "space": ("near_duplicates", ".npz")}


def data_files(generation: int, keys=("vectors", "paths", "stats", "faiss", "hashes", "dup_vectors")
               ) -> dict[str, str]:
    """The names of the data files ``keys`` of an index generation (0: the names before generations existed)."""
    return {key: f"{DATA_KEYS[key][0]}{f'.{generation}' if generation else ''}{DATA_KEYS[key][1]}" for key in keys}


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


def resolve_backend(backend: str, kind: str) -> str:
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
        self.backend = resolve_backend(backend, info["kind"])
        self._searcher: FaissSearcher | None = None
        self._tensor: torch.Tensor | None = None  # the vectors in memory, for the torch backend
        self._nprobe = nprobe or int(info.get("nprobe") or 16)
        self._ef_search = int(info.get("ef_search") or 64)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def fingerprint(self) -> str:
        return self.info["fingerprint"]

    @property
    def generation(self) -> int:
        return int(self.info.get("generation", 0))

    @property
    def files(self) -> dict[str, str]:
        """The data files of this index (:func:`data_files`)."""
        return dict(self.info.get("files") or data_files(self.generation))

    @property
    def stats(self) -> list[list[int]] | None:
        """Each row's image [size, mtime in ns] when it was embedded; None for an index without them."""
        try:
            return json.loads((self.root / self.files["stats"]).read_text())
        except (OSError, ValueError):
            return None

    @classmethod
    def load(cls, root: str | os.PathLike, backend: str = "auto", nprobe: int | None = None) -> "ImageIndex":
        """Open an index folder written by :func:`~contrastkit.search.build_index`.

        Raises:
            ValueError: the folder is missing, is not an index (or its first build has not finished), or its files
                disagree.
        """
        path = Path(os.path.expanduser(os.fspath(root)))
        if not (path / "index.json").is_file():
            what = ("does not exist" if not path.exists() else
                    "has no finished index yet (its build was stopped: run the same contrastkit index command "
                    "again to finish it)" if (path / ".contrastkit.json").is_file() else
                    "is not a contrastkit index (no index.json)")
            raise ValueError(f"index {os.fspath(root)!r} {what}; build one with: contrastkit index --checkpoint "
                             f"CK --images DIR --out {os.fspath(root)}")
        for attempt in (0, 1):  # an update may replace the generation between reading index.json and its files
            try:
                info = json.loads((path / "index.json").read_text())
                files = info.get("files") or data_files(int(info.get("generation", 0)))
                paths = json.loads((path / files["paths"]).read_text())
                vectors = np.load(path / files["vectors"], mmap_mode="r")
                break
            except (OSError, ValueError) as exc:
                if attempt:
                    raise ValueError(f"index {os.fspath(root)!r} is damaged ({type(exc).__name__}: {exc}); build "
                                     f"it again (contrastkit index --rebuild)") from exc
        if info.get("format") != INDEX_FORMAT or not (len(paths) == info.get("count") == vectors.shape[0]):
            raise ValueError(f"index {os.fspath(root)!r} is damaged: index.json says count={info.get('count')}, "
                             f"the paths file has {len(paths)} entries, the vectors have shape {vectors.shape}")
        return cls(path, info, paths, vectors, backend, nprobe)

    def _optional_array(self, key: str, width: int, dtype) -> np.ndarray | None:
        """The data file ``key`` memory-mapped, or None when this index has none (written before it existed)."""
        name = self.files.get(key)
        if not name or not (self.root / name).is_file():
            return None
        array = np.load(self.root / name, mmap_mode="r")
        if array.shape != (len(self), width) or array.dtype != dtype:
            raise ValueError(f"index {self.root} is damaged: {name} has shape {array.shape} ({array.dtype}), "
                             f"expected ({len(self)}, {width}) {np.dtype(dtype).name}; build it again "
                             f"(contrastkit index --out {self.root} --rebuild)")
        return array

    def pixel_hashes(self) -> np.ndarray | None:
        """The content hash of each row's pixels (rows of zeros where unknown), or None for an index written
        before hashes were stored. Shape: -> (N, 16) uint8, memory-mapped."""
        return self._optional_array("hashes", HASH_BYTES, np.uint8)

    def dup_vectors(self) -> np.ndarray | None:
        """Each row's near-duplicate vector (rows of zeros where unknown), or None for an index written before
        they were stored. Shape: -> (N, D) float32, memory-mapped."""
        return self._optional_array("dup_vectors", int(self.info["dim"]), np.float32)

    def _faiss(self) -> FaissSearcher:
        if self._searcher is None:
            dim = int(self.info["dim"])
            if self.info["kind"] == "flat":
                self._searcher = FaissSearcher("flat", dim).build(np.asarray(self.vectors))
            else:
                self._searcher = FaissSearcher.load(str(self.root / self.files["faiss"]), self.info["kind"], dim,
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
            IndexMismatchError: telling the index's model from ``encoder`` by checkpoint, step and fingerprint,
                and naming the command that rebuilds the index with ``encoder``.
        """
        if encoder.fingerprint == self.fingerprint:
            return
        step = self.info.get("checkpoint_step")
        built = (f"the model of {self.info['checkpoint']}" + (f" at step {step}" if step is not None else "")
                 + f" ({self.info['what']}, fingerprint {self.fingerprint[:12]})")
        now = (f"step {encoder.step}, " if encoder.step is not None else "") + \
            f"{encoder.what}, fingerprint {encoder.fingerprint[:12]}"
        rebuild = (f"contrastkit index --out {self.root} --rebuild"
                   + ("" if encoder.checkpoint == self.info["checkpoint"] else f" --checkpoint {encoder.checkpoint}"))
        if encoder.checkpoint == self.info["checkpoint"]:
            raise IndexMismatchError(
                f"index {self.root} was built with {built}; {encoder.checkpoint} now holds another model ({now}), "
                f"so the run was trained further or replaced since, and the index's vectors are not comparable "
                f"with it. Embed every image again with the current checkpoint: {rebuild}")
        gone = "" if Path(self.info["checkpoint"]).is_file() else ", which no longer exists"
        raise IndexMismatchError(
            f"index {self.root} was built with {built}{gone}; checkpoint {encoder.checkpoint} ({now}) is another "
            f"model, whose vectors are not comparable. Search with the index's own model, or rebuild the index with "
            f"this one: {rebuild}")


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


