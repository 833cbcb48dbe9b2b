"""Export embeddings to disk for external tools (projector, notebooks, faiss).

:func:`export_embeddings` writes three files next to each other from one stem
``out`` (a trailing ``.npy`` / ``.csv`` / ``.json`` on the stem is dropped):

* ``out.npy``: the float32 matrix, row i is sample i, shape (N, D);
* ``out.csv``: a header ``index,path,label`` and one row per sample (``path`` is
  empty when no paths are given); with class names, a fourth column ``class``
  holds the name of each row's class (empty for an unlabelled row, label -1);
* ``out.json``: metadata ``{"dim", "count", "what", "dtype", "format_version"}``
  (and ``"classes"``, the class names, when given) plus any extra keys passed as
  ``meta`` (encoder name, checkpoint, ...).

:func:`load_embeddings` reads them back and checks that the three agree.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ._checks import as_features, as_labels

__all__ = ["export_embeddings", "load_embeddings", "EMBEDDING_KINDS", "CSV_HEADER", "class_column"]

#: What an exported matrix may hold: the representation h or the projection z.
EMBEDDING_KINDS = ("h", "z")
_FORMAT_VERSION = 1
_RESERVED = ("dim", "count", "what", "dtype", "format_version", "classes")
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

    Returns:
        ``{"npy": Path, "csv": Path, "json": Path}``, the files written.

    Raises:
        TypeError: for wrongly typed arguments or non-serialisable ``meta``.
        ValueError: for mismatched lengths, non-finite features, an unknown
            ``what``, labels below -1 or without a class name, or ``meta`` keys
            that clash with the reserved ones.

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
        "format_version": _FORMAT_VERSION,
        **({} if class_names is None else {"classes": [str(c) for c in class_names]}),
        **extra,
    }
    try:
        meta_text = json.dumps(info, indent=2, sort_keys=False)
    except TypeError as exc:
        raise TypeError(f"meta must be JSON-serialisable: {exc}") from exc

    stem = _stem(out_file)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = {
        "npy": stem.with_name(stem.name + ".npy"),
        "csv": stem.with_name(stem.name + ".csv"),
        "json": stem.with_name(stem.name + ".json"),
    }
    np.save(written["npy"], x.numpy().astype(np.float32))
    with open(written["csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER if names is not None else CSV_HEADER[:3])
        for i, label in enumerate(y.tolist()):
            row = [i, "" if paths is None else str(paths[i]), label]
            writer.writerow(row if names is None else [*row, names[i]])
    written["json"].write_text(meta_text + "\n", encoding="utf-8")
    return written


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
        ValueError: if the files disagree (row count, dimension, indices).

    Shape:
        -> features (N, D), labels (N,).
    """
    stem = _stem(out_file)
    files = {ext: stem.with_name(stem.name + "." + ext) for ext in ("npy", "csv", "json")}
    for ext, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"embedding {ext} file {str(path)!r} does not exist")
    meta = json.loads(files["json"].read_text(encoding="utf-8"))
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
            paths.append(row[1])
            labels.append(int(row[2]))
            names.append(row[3] if width == 4 else "")
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
