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
* ``faiss.<g>.index``: for ``ivf`` and ``hnsw``, the FAISS structure (``flat`` needs none: exact search runs in
  FAISS when it is installed, else as chunked matrix products in torch).

``<g>`` is the index's generation: each build or update writes the next one beside the current one, and then
replaces ``index.json`` (:mod:`.build`). An index written before generations existed has ``vectors.npy``,
``paths.json`` and ``faiss.index`` and no stats.
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

__all__ = ["ImageIndex", "IndexMismatchError", "list_images", "INDEX_FORMAT", "BACKENDS", "VERSION", "data_files",
           "resolve_backend", "check_k"]

INDEX_FORMAT = "contrastkit-index"
VERSION = 2
BACKENDS = ("auto", "torch", "faiss")


class IndexMismatchError(ValueError):
    """A query or an update through another model than the one the index was built with."""


def data_files(generation: int) -> dict[str, str]:
    """The data files of an index generation (0: the names before generations existed)."""
    if not generation:
        return {"vectors": "vectors.npy", "paths": "paths.json", "stats": "stats.json", "faiss": "faiss.index"}
    return {"vectors": f"vectors.{generation}.npy", "paths": f"paths.{generation}.json",
            "stats": f"stats.{generation}.json", "faiss": f"faiss.{generation}.index"}


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

    def _faiss(self) -> FaissSearcher:
        if self._searcher is None:
            dim = int(self.info["dim"])
            if self.info["kind"] == "flat":
                self._searcher = FaissSearcher("flat", dim).build(np.asarray(self.vectors))
            else:
                self._searcher = FaissSearcher.load(str(self.root / self.files["faiss"]), self.info["kind"], dim,
                                                    nprobe=self._nprobe)
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


