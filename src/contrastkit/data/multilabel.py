"""Multi-label data: the label sets of a folder's images, read from a CSV file (``--labels FILE.csv``).

The file has a header with (at least) the columns ``path`` and ``labels``; ``path`` is an image's path relative to
the data folder, ``labels`` its label names separated by ``;`` (empty: no label)::

    path,labels
    beach_001.jpg,sea;sand;sky
    city_004.jpg,sky;building
    night_002.jpg,

Every training image of the folder must have a row; a row may name an image outside the training split (a test
image), which is then not used. The label names, sorted, are the columns of the multi-hot matrix.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["read_label_csv", "LABEL_SEPARATOR"]

LABEL_SEPARATOR = ";"
_SHOWN = 3  # paths named in an error message


def _some(paths: Sequence[str]) -> str:
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return ", ".join(repr(p) for p in paths[:_SHOWN]) + more


def _rows(path: Path) -> list[dict[str, str]]:
    """The CSV's rows as dicts, after checking that it is a readable UTF-8 CSV file with ``path`` and ``labels``.

    Raises:
        ValueError: naming the file: missing, not named ``.csv``, not UTF-8 text, or without the two columns.
    """
    if not path.is_file():
        raise ValueError(f"--labels {path} does not exist")
    if path.suffix.lower() != ".csv":
        raise ValueError(f"--labels {path} must be a .csv file (columns path and labels), got a {path.suffix or 'no'} "
                         f"suffix")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"--labels {path} is not a UTF-8 CSV file ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in ("path", "labels") if c not in columns]
    if missing:
        raise ValueError(f"--labels {path} must have the columns path and labels in its header; it has "
                         f"{columns or 'none'}, missing {missing}")
    return rows


def read_label_csv(path: str | os.PathLike, root: str | os.PathLike, image_paths: Sequence[str]
                   ) -> tuple[torch.Tensor, list[str]]:
    """The multi-hot label sets of ``image_paths`` from a CSV file (see the module docstring).

    Args:
        path: the CSV file.
        root: the data folder the CSV's paths are relative to.
        image_paths: the training images, in the data set's order.

    Returns:
        ``(labels, names)``: labels (N, C) float32, 1 where image n has label c; the C label names, sorted.

    Raises:
        ValueError: naming the file and the rows: a missing or malformed file, a row without a path, a path given
            twice, rows naming files that do not exist, training images without a row, or no image with a label.

    Shape:
        -> labels (N, C).
    """
    path, root = Path(path).expanduser(), Path(root).expanduser()
    if not image_paths:
        raise ValueError(f"--labels {path} gives labels to the images of a folder, but {root} lists no image files")
    rows = _rows(path)
    sets: dict[str, set[str]] = {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        name = (row.get("path") or "").strip()
        if not name:
            raise ValueError(f"--labels {path}, line {number}: the path is empty")
        key = os.path.normpath(os.path.join(root, name))
        if key in sets:
            raise ValueError(f"--labels {path}, line {number}: {name!r} is listed twice")
        sets[key] = {n.strip() for n in (row.get("labels") or "").split(LABEL_SEPARATOR) if n.strip()}
    absent = [os.path.relpath(k, root) for k in sets if not os.path.isfile(k)]
    if absent:
        raise ValueError(f"--labels {path} names {len(absent)} file(s) that do not exist under {root}: "
                         f"{_some(absent)}")
    keys = [os.path.normpath(os.path.abspath(p)) for p in image_paths]
    unlisted = [os.path.relpath(k, root) for k in keys if k not in sets]
    if unlisted:
        raise ValueError(f"--labels {path} has no row for {len(unlisted)} of the {len(keys)} training images of "
                         f"{root}: {_some(unlisted)}; give each a row (an empty labels column: no label)")
    names = sorted(set().union(*(sets[k] for k in keys)))
    if not names:
        raise ValueError(f"--labels {path}: every training image has an empty label set; multi-label training needs "
                         f"labels (names separated by {LABEL_SEPARATOR!r} in the labels column)")
    column = {n: c for c, n in enumerate(names)}
    labels = torch.zeros(len(keys), len(names))
    for i, k in enumerate(keys):
        for n in sets[k]:
            labels[i, column[n]] = 1.0
    return labels, names
