"""Building and updating an index folder (:mod:`.index` says what it holds): one writer at a time, and the old
index in place until the new one is complete.

The folder is contrastkit's (its marker lists every file, :mod:`contrastkit.runtime.ownership`) and ``index``
holds its writer lock from start to end, so a second ``index`` on it is refused at once. Embedding goes to
``OUT/.partial`` in shards (:mod:`.stream`): a killed build or update, run again, embeds only what is missing.
The vectors, paths and image stats of each version of the index are files of their own generation
(``vectors.<g>.npy``, ...); ``index.json``, replaced atomically, names the generation that is the index. So a
build, an ``--update``, ``--rebuild`` or ``--overwrite`` leaves the previous index readable until its last
rename, and a process killed at any point leaves either index whole. Files of an unfinished generation are
removed by the next command that writes the folder.

``--update`` compares each image's size and modification time with the index's: new images are embedded and
added, changed ones embedded again, and images that are gone are dropped.

Each image is embedded with its content hash (:mod:`.pixels`) and its near-duplicate vector (:mod:`.views`), so
that ``search --near-duplicates`` needs no second pass over the images. For ``ivf`` and ``hnsw`` the search
parameter is chosen for a recall target on held-out queries (:mod:`.tuning`).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
import torch

from ..data.sources import ImageFiles
from ..runtime import resolve_device
from ..runtime.ownership import (MARKER, FolderLock, NotOwnedError, claim, foreign_entries, os_error_text,
                                 publish, read_marker, remove_owned)
from .backends import KINDS
from .encoder import load_frozen_encoder
from .index import DATA_KEYS, INDEX_FORMAT, VERSION, ImageIndex, data_files, list_images, resolve_backend
from .pixels import HASH_BYTES
from .stream import SHARD_SIZE, embed_stream, iter_shards
from .tuning import build_tuned, check_recall

__all__ = ["build_index", "WORK", "sweep", "check_index_folder"]

#: the index's work folder of embedding shards (inside the index folder)
WORK = ".partial"


def _stat(path: str) -> list[int]:
    """[size, modification time in ns] of an image: what ``--update`` compares to tell a changed image."""
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


@dataclass
class _Plan:
    """What a build or update embeds and keeps.

    Attributes:
        embed: the images to embed (new and changed), with their stats.
        keep: rows of the old index that stay, in order.
        added, changed, removed: the counts ``--update`` reports.
    """

    embed: list[str]
    stats: list[list[int]]
    keep: list[int] = field(default_factory=list)
    added: int = 0
    changed: int = 0
    removed: int = 0


def _plan(images: list[str], old: ImageIndex | None) -> _Plan:
    """Every image for a new index; for an update, the new and changed images, and the old rows to keep."""
    stats = {p: _stat(p) for p in images}
    if old is None:
        return _Plan(images, [stats[p] for p in images], added=len(images))
    old_stats = old.stats
    keep, changed = [], []
    for row, path in enumerate(old.paths):
        if path not in stats:
            continue  # gone: dropped
        if old_stats is not None and old_stats[row] != stats[path]:
            changed.append(path)
        else:
            keep.append(row)
    known = set(old.paths)
    added = [p for p in images if p not in known]
    embed = sorted(added + changed)
    return _Plan(embed, [stats[p] for p in embed], keep, added=len(added), changed=len(changed),
                 removed=len(old.paths) - len(keep) - len(changed))


def _unit(x: np.ndarray) -> np.ndarray:
    return F.normalize(torch.from_numpy(np.asarray(x, np.float32)), dim=1).numpy()  # (n, D)


def _write_generation(out: Path, files: dict[str, str], old: ImageIndex | None, plan: _Plan,
                      work: Path) -> tuple[list[str], list[list[int]], int]:
    """The new generation's vectors, near-duplicate vectors and content hashes (the old rows kept, then the new
    shards' rows), paths and stats; returns (paths, stats, dim). Rows of zeros: hashes and near-duplicate vectors
    that an old index did not store (:mod:`.dedup` completes them)."""
    shards = list(iter_shards(work))
    dims = {s["features"].shape[1] for s in shards if s["features"].shape[0]}
    dim = dims.pop() if dims else (int(old.info["dim"]) if old is not None else 0)
    if old is not None and dim != int(old.info["dim"]):
        raise ValueError(f"new vectors have D={dim} but the index holds D={old.info['dim']}")
    n = len(plan.keep) + sum(s["features"].shape[0] for s in shards)
    matrix = np.lib.format.open_memmap(out / files["vectors"], mode="w+", dtype=np.float32, shape=(n, dim))
    dup = np.lib.format.open_memmap(out / files["dup_vectors"], mode="w+", dtype=np.float32, shape=(n, dim))
    hashes = np.zeros((n, HASH_BYTES), np.uint8)
    paths = [old.paths[r] for r in plan.keep] if old is not None else []
    old_stats = (old.stats or [None] * len(old.paths)) if old is not None else []
    stats = [old_stats[r] or _stat(old.paths[r]) for r in plan.keep] if old is not None else []
    if old is not None:
        old_hashes, old_dup = old.pixel_hashes(), old.dup_vectors()
        for lo in range(0, len(plan.keep), 65536):
            rows = plan.keep[lo:lo + 65536]
            matrix[lo:lo + len(rows)] = old.vectors[rows]
            dup[lo:lo + len(rows)] = old_dup[rows] if old_dup is not None else 0.0
            if old_hashes is not None:
                hashes[lo:lo + len(rows)] = old_hashes[rows]
    row = len(plan.keep)
    for s in shards:
        m = s["features"].shape[0]
        matrix[row:row + m] = _unit(s["features"])
        if m:
            dup[row:row + m] = _unit(s["dup_features"])
        hashes[row:row + m] = s["hashes"]
        paths += [plan.embed[p] for p in s["positions"].tolist()]
        stats += [plan.stats[p] for p in s["positions"].tolist()]
        row += m
    matrix.flush()
    dup.flush()
    del matrix, dup
    np.save(out / files["hashes"], hashes)
    (out / files["paths"]).write_text(json.dumps(paths))
    (out / files["stats"]).write_text(json.dumps(stats))
    return paths, stats, dim


def _approximate_structure(out: Path, files: dict[str, str], kind: str, nlist: int | None, nprobe: int | None,
                           recall: float, seed: int = 0) -> dict:
    """Build and save the FAISS IVF/HNSW structure, its search parameter tuned for ``recall`` (or ``nprobe`` as
    given), with its recall@10 on held-out queries."""
    vectors = np.load(out / files["vectors"], mmap_mode="r")
    searcher, tuned = build_tuned(vectors, kind, recall, nlist=nlist, seed=seed,
                                  fixed=nprobe if kind == "ivf" else None)
    searcher.save(str(out / files["faiss"]))
    extra: dict[str, Any] = {"recall_at_10": tuned.to_dict()}
    if kind == "ivf":
        extra.update(nlist=int(searcher.nlist), nprobe=int(tuned.value))
    else:
        extra.update(ef_search=int(tuned.value))
    return extra


def _older_index(out: Path) -> bool:
    """Whether ``out`` is an index written before folders had markers (only its own files)."""
    names = {"index.json", *data_files(0, DATA_KEYS).values(), FolderLock(out, "").name}
    if not (out / "index.json").is_file() or not {e.name for e in out.iterdir()} <= names:
        return False
    try:
        return json.loads((out / "index.json").read_text()).get("format") == INDEX_FORMAT
    except (OSError, ValueError):
        return False


def _open_folder(out: Path) -> tuple[FolderLock, bool]:
    """Create ``out`` if needed, take its writer lock and check it is an index folder (or empty); an index of an
    older contrastkit without a marker is taken over. Returns (the lock, whether ``out`` was created).

    Raises:
        FolderBusyError: another process writes the index.
        NotOwnedError: a folder of other files, or another kind of contrastkit folder.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected an index folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(out, "index").acquire()
    except OSError as exc:
        raise ValueError(f"--out {out} cannot be written: {os_error_text(exc)}") from None
    try:
        check_index_folder(out)
    except BaseException:
        _close(out, lock, created, failed=True)
        raise
    return lock, created


def check_index_folder(out: Path, flag: str = "--out") -> None:
    """Check, holding the writer lock, that ``out`` is an index folder (or empty) that contrastkit may write; an
    index of an older contrastkit without a marker is taken over (its files listed).

    Raises:
        NotOwnedError: a folder of other files, or another kind of contrastkit folder.
    """
    marker = read_marker(out)
    if marker is None and _older_index(out):
        claim(out, [n for n in ("index.json", *data_files(0, DATA_KEYS).values()) if (out / n).exists()], "index",
              "index")
    elif marker is None and foreign_entries(out):
        shown = ", ".join(foreign_entries(out)[:4])
        raise NotOwnedError(f"{flag} {out} holds files that contrastkit did not write ({shown}; no {MARKER}); an "
                            f"index is never written into such a folder: choose another {flag}")
    elif marker is not None and marker.get("kind") != "index":
        raise NotOwnedError(f"{flag} {out} is a contrastkit {marker.get('kind')} folder, not an index; choose "
                            f"another {flag}")


def _close(out: Path, lock: FolderLock, created: bool, failed: bool, keep_work: bool = True) -> None:
    """Release the lock; a failed build that created ``out`` and left no index (nor work that ``keep_work``
    keeps for the next run: an interrupted build) removes it."""
    remove = (failed and created and not (out / "index.json").exists()
              and not (keep_work and (out / WORK).exists()))
    if remove:
        remove_owned(out)
        (out / MARKER).unlink(missing_ok=True)
    lock.release(remove=remove or (lock.created and read_marker(out) is None))  # nothing of ours stays there
    if remove:
        try:
            out.rmdir()
        except OSError:
            pass


def sweep(out: Path, current: dict[str, str]) -> None:
    """Remove the files of generations that ``index.json`` does not name (left by a killed build, or replaced)."""
    keep = {"index.json", WORK, *current.values()}
    listed = (read_marker(out) or {}).get("files", {})
    remove_owned(out, [n for n in listed if n not in keep])


def _check_options(kind: str, backend: str, update: bool, rebuild: bool, overwrite: bool, checkpoint,
                   images, recall: float) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    resolve_backend(backend, kind)
    check_recall(recall)
    if update + rebuild + overwrite > 1:
        raise ValueError("--update, --rebuild and --overwrite exclude each other: --update adds and refreshes "
                         "images, --rebuild embeds every image again with the current checkpoint, --overwrite "
                         "builds a new index in its place")
    if not (update or rebuild) and (checkpoint is None or images is None):
        raise ValueError("a new index needs --checkpoint (the model that embeds the images) and --images")


def _existing(out: Path, update: bool, rebuild: bool, overwrite: bool) -> ImageIndex | None:
    """The index ``out`` holds (None for a new one), checked against the options."""
    old = ImageIndex.load(out, backend="torch") if (out / "index.json").is_file() else None
    sweep(out, old.files if old is not None else {})
    if old is None and (update or rebuild):
        flag = "--update" if update else "--rebuild"
        raise ValueError(f"{flag} needs an existing index at {out}; build one first (without {flag})")
    if old is not None and not (update or rebuild or overwrite):
        raise ValueError(f"--out {out} already holds an index; pass --update to add new and changed images to it, "
                         f"--rebuild to embed every image again with the current checkpoint, --overwrite to build "
                         f"a new index in its place (the old one stays until the new one is complete), or choose "
                         f"another --out")
    return old


def build_index(checkpoint: str | os.PathLike | None, images: str | os.PathLike | None, out: str | os.PathLike, *,
                kind: str = "flat", update: bool = False, rebuild: bool = False, overwrite: bool = False,
                projection: bool = False, device: str = "auto", batch_size: int = 256, num_workers: int = 2,
                progress: bool = True, nlist: int | None = None, nprobe: int | None = None, backend: str = "auto",
                shard_size: int = SHARD_SIZE, recall: float = 0.95) -> dict[str, Any]:
    """Embed every image under ``images`` and write a search index at ``out``.

    Args:
        checkpoint: the ``pretrain`` checkpoint (or run folder) that embeds the images; with ``update`` or
            ``rebuild`` it may be None (the index's own), and with ``update`` it must be the index's model.
        images: a folder; every image file under it (recursively) is indexed (``update``, ``rebuild``: default
            the index's folder).
        out: the index folder to create (or, with ``update`` / ``rebuild`` / ``overwrite``, to replace).
        kind: ``flat`` (exact), ``ivf`` or ``hnsw`` (FAISS, approximate; the search parameter is chosen for
            ``recall``, and the recall@10 reached is measured and stored).
        update: embed the images that are new or changed (size or modification time) and drop the ones that are
            gone, without embedding the others again.
        rebuild: embed every image again (with the checkpoint's current weights, after a run was trained
            further), keeping the index's kind and what it indexes.
        overwrite: build a new index in place of the one at ``out``.
        projection: index z = g(h) instead of h.
        device: where the encoder runs (``auto``: CUDA when available).
        batch_size, num_workers, progress, shard_size: embedding options (:func:`contrastkit.search.embed_stream`).
        nlist, nprobe: IVF inverted lists (default about 4 sqrt(N)) and lists visited per query (default: the
            fewest that reach ``recall``).
        backend: for a flat index, ``auto`` (FAISS when installed), ``torch`` or ``faiss``.
        recall: for ``ivf`` and ``hnsw``, the recall@10 (against exact search, on held-out queries) that the
            search parameter (nprobe, efSearch) is chosen for, in (0, 1].

    Returns:
        A summary: index, count, added, changed, removed, bad_count, bad_files, kind, dim, build_s (and for ivf
        and hnsw recall_at_10, recall_target, recall_reached and the search parameter chosen).

    Raises:
        ValueError: an empty or missing folder, an existing index without ``update`` / ``rebuild`` /
            ``overwrite``, no readable image, bad options, a folder that is not contrastkit's;
            :class:`IndexMismatchError` for an update through another checkpoint; ``FolderBusyError`` when another
            process writes the index.
        RuntimeError: FAISS is needed (ivf, hnsw, backend faiss) but not installed.
    """
    t0 = time.perf_counter()
    out = Path(os.path.expanduser(os.fspath(out)))
    _check_options(kind, backend, update, rebuild, overwrite, checkpoint, images, recall)
    lock, created = _open_folder(out)
    try:
        old = _existing(out, update, rebuild, overwrite)
        mode = "update" if update else "rebuild" if rebuild else "new"
        summary = _build(checkpoint, images, out, old, mode, kind, projection, device, (nlist, nprobe, recall),
                         {"batch_size": batch_size, "num_workers": num_workers, "progress": progress,
                          "shard_size": shard_size})
    except Exception:  # an error: nothing to resume (an interrupt keeps the shards for the same command again)
        _close(out, lock, created, failed=True, keep_work=False)
        raise
    except BaseException:
        _close(out, lock, created, failed=True)
        raise
    _close(out, lock, created, failed=False)
    return {**summary, "build_s": round(time.perf_counter() - t0, 3)}


def _build(checkpoint, images, out: Path, old: ImageIndex | None, mode: str, kind: str, projection: bool,
           device: str, approximate: tuple, embedding: dict[str, Any]) -> dict[str, Any]:
    """Embed what the plan needs into ``OUT/.partial``, write the next generation, make it current. ``mode``:
    ``new`` (also ``--overwrite``), ``update`` or ``rebuild`` (these two keep what the index is);
    ``approximate``: (nlist, nprobe, recall) for ivf and hnsw."""
    update = mode == "update"
    if mode in ("update", "rebuild"):
        kind, projection = old.info["kind"], old.info["what"] == "z"  # type: ignore[union-attr]
        images = images if images is not None else old.info["images"]  # type: ignore[union-attr]
    encoder = load_frozen_encoder(checkpoint if checkpoint is not None else old.info["checkpoint"],  # type: ignore
                                  projection=projection)
    if update:
        old.check_encoder(encoder)  # type: ignore[union-attr]
    plan = _plan(list_images(images), old if update else None)
    summary: dict[str, Any] = {"index": str(out), "kind": kind, "added": plan.added, "changed": plan.changed,
                               "removed": plan.removed}
    if update and not plan.embed and not plan.removed:  # nothing changed: the index stays as it is
        return {**summary, "count": len(old), "dim": int(old.info["dim"]), "bad_count": 0,  # type: ignore
                "bad_files": []}
    work = out / WORK
    claim(out, [WORK], "index", "index")
    bad_files: list[str] = []
    if plan.embed:
        ids = [f"{p}\0{s[0]}\0{s[1]}" for p, s in zip(plan.embed, plan.stats)]  # a changed image is new work
        res = embed_stream(encoder, ImageFiles([(p, -1) for p in plan.embed]), ids, work,
                           device=resolve_device(device, "--device"), dup_views=True, **embedding)
        bad_files = [plan.embed[i] for i in res.bad]
        if res.count == 0 and not plan.keep:
            raise ValueError(f"none of the {len(plan.embed)} image files under {images} could be read (first: "
                             f"{bad_files[0]!r}); no index was written")
    generation = (old.generation if old is not None else 0) + 1
    files = data_files(generation)
    claim(out, [*files.values(), "index.json", "index.json.tmp"], "index", "index")
    paths, _, dim = _write_generation(out, files, old if update else None, plan, work)
    info = {"format": INDEX_FORMAT, "version": VERSION, "count": len(paths), "dim": dim, "what": encoder.what,
            "kind": kind, "checkpoint": encoder.checkpoint, "checkpoint_step": encoder.step,
            "fingerprint": encoder.fingerprint, "image_size": encoder.image_size,
            "images": str(Path(os.path.expanduser(os.fspath(images))).resolve()), "bad_files": bad_files,
            "normalised": "L2", "generation": generation, "files": files}
    if kind != "flat":
        info.update(_approximate_structure(out, files, kind, *approximate))
    (out / "index.json.tmp").write_text(json.dumps(info, indent=2) + "\n")
    publish(out / "index.json.tmp", out / "index.json")  # the new generation is the index from here on
    sweep(out, files)
    remove_owned(out, [WORK])
    summary.update(count=len(paths), dim=dim, bad_count=len(bad_files), bad_files=bad_files)
    if "recall_at_10" in info:
        r = info["recall_at_10"]
        summary.update(recall_at_10=r["value"], recall_target=r["target"], recall_reached=r["reached"],
                       **{r["param"]: r["param_value"]})
    return summary
