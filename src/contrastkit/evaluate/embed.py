"""Export embeddings to disk for external tools (projector, notebooks, faiss).

:func:`export_embeddings` writes three files next to each other from one stem
``out`` (a trailing ``.npy`` / ``.csv`` / ``.json`` on the stem is dropped):

* ``out.npy``: the float32 matrix, row i is sample i, shape (N, D);
* ``out.csv``: a header ``index,path,label`` and one row per sample (``path`` is
  empty when no paths are given); with class names, a fourth column ``class``
  holds the name of each row's class (empty for an unlabelled row, label -1);
* ``out.json``: metadata ``{"dim", "count", "what", "dtype", "format_version", "sha256"}``
  (and ``"classes"``, the class names, when given) plus any extra keys passed as
  ``meta`` (encoder name, checkpoint, ...). ``sha256`` holds the digests of the
  ``.npy`` and ``.csv`` files.

The three files are one unit: each is written beside under a temporary name, and they
are renamed into place together, ``.json`` last. :func:`load_embeddings` checks the
digests, so a set mixed from two runs (a process killed between the renames) is refused
instead of read. An existing set is replaced only when contrastkit wrote it (the folder's
marker lists it, :mod:`contrastkit.runtime.ownership`) and ``overwrite`` is given.

The ``path`` and ``class`` cells are names as data (:func:`contrastkit.runtime.text.csv_cell`):
control characters escaped and a leading ``= + - @`` guarded, so a spreadsheet shows them as
text; :func:`load_embeddings` gives the names back as they were.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..runtime.ownership import OutputFiles, backup_path
from ..runtime.text import csv_cell, from_csv_cell
from ._checks import as_features, as_labels

__all__ = ["export_embeddings", "load_embeddings", "EMBEDDING_KINDS", "CSV_HEADER", "class_column",
           "embedding_output", "seal_embedding_files", "FORMAT_VERSION"]

#: What an exported matrix may hold: the representation h or the projection z.
EMBEDDING_KINDS = ("h", "z")
#: 2: escaped name cells and the sha256 of the .npy and .csv in the .json (1: neither)
FORMAT_VERSION = 2
_RESERVED = ("dim", "count", "what", "dtype", "format_version", "classes", "sha256")
_EXTENSIONS = ("npy", "csv", "json")
#: The columns of ``out.csv``; ``class`` is there when class names are given.
CSV_HEADER = ["index", "path", "label", "class"]


def class_column(labels: Sequence[int], class_names: Sequence[str]) -> list[str]:
    """The class name of each label: ``class_names[label]``, or ``""`` for an unlabelled row (label -1).

    Raises:
        ValueError: a label below -1 or without a name.
    """
    names = list(class_names)
    out = []
    for label in labels:
        if label == -1:
            out.append("")
        elif 0 <= label < len(names):
            out.append(str(names[label]))
        else:
            raise ValueError(f"label {label} has no class name: {len(names)} class names given, labels must be "
                             f"in [0, {len(names) - 1}] or -1 (unlabelled)")
    return out


def _labels(labels: Any, n: int) -> torch.Tensor:
    """Class indices, with -1 allowed for an unlabelled row."""
    y = torch.as_tensor(labels)
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        return as_labels("labels", y, n, n_name="features").cpu()  # raises the usual message
    unlabelled = (y == -1).cpu()
    checked = as_labels("labels", torch.where(y == -1, 0, y), n, n_name="features").cpu()
    return torch.where(unlabelled, -1, checked)


def _stem(out_file: str | Path) -> Path:
    if not isinstance(out_file, (str, Path)):
        raise TypeError(f"out_file must be a str or Path, got {type(out_file).__name__}")
    path = Path(out_file)
    if path.suffix in (".npy", ".csv", ".json"):
        path = path.with_suffix("")
    if path.name in ("", ".", ".."):
        raise ValueError(f"out_file must name a file stem such as 'runs/x/embeddings', got {str(out_file)!r}")
    return path


def export_embeddings(
    features: torch.Tensor,
    labels: torch.Tensor,
    paths: Sequence[str] | None,
    out_file: str | Path,
    what: str = "h",
    meta: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write embeddings, their index/path/label table and metadata.

    Args:
        features: the embeddings.
        labels: the class index of each row; -1 marks an unlabelled row.
        paths: the source file of each row (or any identifier), or None.
        out_file: file stem; parent directories are created.
        what: ``"h"`` (representation) or ``"z"`` (projection).
        meta: extra JSON-serialisable metadata merged into ``out.json``.
        class_names: the name of each class index; when given, ``out.csv`` gets a
            ``class`` column and ``out.json`` a ``classes`` list.
        overwrite: replace files an earlier export wrote at ``out_file`` (files
            contrastkit did not write are never replaced).

    Returns:
        ``{"npy": Path, "csv": Path, "json": Path}``, the files written.

    Raises:
        TypeError: for wrongly typed arguments or non-serialisable ``meta``.
        ValueError: for mismatched lengths, non-finite features, an unknown
            ``what``, labels below -1 or without a class name, ``meta`` keys
            that clash with the reserved ones, or files in the way (see ``overwrite``).

    Shape:
        features (N, D), labels (N,), paths N entries.
    """
    x = as_features("features", features, allow_empty=True).detach().cpu()
    y = _labels(labels, x.shape[0])
    names = None if class_names is None else class_column(y.tolist(), class_names)
    if paths is not None:
        if isinstance(paths, str) or not isinstance(paths, Sequence):
            raise TypeError(f"paths must be a sequence of str or None, got {type(paths).__name__}")
        if len(paths) != x.shape[0]:
            raise ValueError(f"paths has {len(paths)} entries but features has N={x.shape[0]} samples")
    if what not in EMBEDDING_KINDS:
        raise ValueError(f"what must be one of {EMBEDDING_KINDS}, got {what!r}")
    extra = dict(meta or {})
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"meta keys {clash} are reserved; reserved keys are {list(_RESERVED)}")
    info = {
        "dim": int(x.shape[1]),
        "count": int(x.shape[0]),
        "what": what,
        "dtype": "float32",
        **({} if class_names is None else {"classes": [str(c) for c in class_names]}),
        **extra,
    }
    try:
        json.dumps(info)
    except TypeError as exc:
        raise TypeError(f"meta must be JSON-serialisable: {exc}") from exc

    stem = _stem(out_file)
    with embedding_output(stem, "embed", overwrite) as files:
        temp = {ext: files.temp(f"{stem.name}.{ext}") for ext in _EXTENSIONS}
        with open(temp["npy"], "wb") as fh:
            np.save(fh, x.numpy().astype(np.float32))
        with open(temp["csv"], "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_HEADER if names is not None else CSV_HEADER[:3])
            for i, label in enumerate(y.tolist()):
                row = [i, "" if paths is None else csv_cell(paths[i]), label]
                writer.writerow(row if names is None else [*row, csv_cell(names[i])])
        seal_embedding_files(temp, info)
        files.publish([f"{stem.name}.{ext}" for ext in _EXTENSIONS])  # the .json, which holds the digests, last
    return {ext: stem.with_name(f"{stem.name}.{ext}") for ext in _EXTENSIONS}


def embedding_output(stem: Path, command: str, overwrite: bool, keep: Sequence[str] = ()) -> OutputFiles:
    """The three files of ``stem`` as one output (:class:`~contrastkit.runtime.ownership.OutputFiles`): checked
    before any work, locked, written beside. ``keep``: a work folder beside them, listed too, that a failed run
    leaves for the next one."""
    return OutputFiles(stem.parent, [f"{stem.name}.{ext}" for ext in _EXTENSIONS], command, "embeddings", overwrite,
                       keep=keep)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def seal_embedding_files(files: dict[str, Path], info: dict[str, Any]) -> None:
    """Write ``files["json"]``: ``info`` with the format version and the digests of ``files["npy"]`` and
    ``files["csv"]`` (written before), which :func:`load_embeddings` checks."""
    meta = {**info, "format_version": FORMAT_VERSION,
            "sha256": {"npy": _sha256(files["npy"]), "csv": _sha256(files["csv"])}}
    files["json"].write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def load_embeddings(out_file: str | Path) -> dict[str, Any]:
    """Read what :func:`export_embeddings` wrote.

    Args:
        out_file: the same stem (or any of the three file names).

    Returns:
        ``{"features": float32 Tensor (N, D), "labels": int64 Tensor (N,),
        "paths": list[str], "class_names": list[str] (one per row; all empty when
        the files hold no class names), "meta": dict}``.

    Raises:
        FileNotFoundError: if one of the three files is missing.
        ValueError: if the files disagree (their digests, row count, dimension, indices): not one unit.

    Shape:
        -> features (N, D), labels (N,).
    """
    stem = _stem(out_file)
    files = {ext: stem.with_name(stem.name + "." + ext) for ext in ("npy", "csv", "json")}
    for ext, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"embedding {ext} file {str(path)!r} does not exist")
    meta = json.loads(files["json"].read_text(encoding="utf-8"))
    _check_digests(files, meta)
    cell = from_csv_cell if int(meta.get("format_version", 1)) >= 2 else str  # version 1 wrote names raw
    array = np.load(files["npy"])
    if array.ndim != 2:
        raise ValueError(f"{files['npy']} holds an array of shape {array.shape}, expected (N, D)")
    paths: list[str] = []
    labels: list[int] = []
    names: list[str] = []
    with open(files["csv"], newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header not in (CSV_HEADER, CSV_HEADER[:3]):
            raise ValueError(f"{files['csv']} has header {header}, expected {CSV_HEADER[:3]} or {CSV_HEADER}")
        width = len(header)
        for row_number, row in enumerate(reader):
            if len(row) != width or int(row[0]) != row_number:
                raise ValueError(f"{files['csv']} row {row_number + 1} is {row}, expected "
                                 f"[{row_number}, {', '.join(header[1:])}]")
            paths.append(cell(row[1]))
            labels.append(int(row[2]))
            names.append(cell(row[3]) if width == 4 else "")
    if not (array.shape[0] == len(labels) == meta.get("count")) or array.shape[1] != meta.get("dim"):
        raise ValueError(
            f"embedding files disagree: npy has shape {array.shape}, csv has {len(labels)} rows, "
            f"json says count={meta.get('count')} dim={meta.get('dim')}"
        )
    return {
        "features": torch.from_numpy(array.astype(np.float32)),
        "labels": torch.tensor(labels, dtype=torch.long),
        "paths": paths,
        "class_names": names,
        "meta": meta,
    }


def _check_digests(files: dict[str, Path], meta: dict[str, Any]) -> None:
    """Refuse an ``.npy`` or ``.csv`` whose sha256 is not the one its ``.json`` records (files written before
    digests were recorded are not checked). While a replacement is under way (or was killed before its ``.json``
    was renamed), the ``.json`` is still the previous set's, and the files it was written with are kept beside as
    ``.<name>.old``: those are read instead."""
    digests = meta.get("sha256")
    if not isinstance(digests, dict):
        return
    for ext in ("npy", "csv"):
        if digests.get(ext) == _sha256(files[ext]):
            continue
        kept = backup_path(files[ext])
        if kept.is_file() and digests.get(ext) == _sha256(kept):
            files[ext] = kept
        else:
            raise ValueError(f"embedding files disagree: {files[ext]} is not the file that {files['json']} was "
                             f"written with (its sha256 differs), so the three files do not come from one run, "
                             f"e.g. a run stopped while it replaced them; write them again (embed --overwrite)")
