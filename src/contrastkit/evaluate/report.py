"""Results tables and files: markdown tables, JSON results, JSON-lines metrics.

:func:`format_table` turns ``{row name: {metric: value}}`` (for example
``{"knn": knn_accuracy(...), "linear": linear_eval(...)}``) into a markdown
table; only scalar entries become cells, so the ``recipe`` dictionaries of the
protocols are skipped. :func:`write_json` writes any result dictionary (tensors,
numpy values and paths converted) and :func:`read_jsonl` reads a
``metrics.jsonl`` file into the list of dicts that
:func:`~contrastkit.evaluate.plot_curves` takes.
"""
from __future__ import annotations

import json
import math
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["format_table", "write_json", "read_jsonl", "to_jsonable"]


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, (Real, np.generic)) and not isinstance(value, (str, bytes))


def _format_cell(value: Any, precision: int, percent: bool) -> str:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Integral):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if percent:
        return f"{100.0 * value:.{max(precision - 2, 0)}f}"
    return f"{value:.{precision}f}"


def format_table(
    results: Mapping[str, Mapping[str, Any]],
    precision: int = 4,
    percent: bool = False,
    row_header: str = "",
) -> str:
    """Render ``{row: {column: value}}`` as a markdown table.

    Columns are the union of the scalar keys of all rows, in first-seen order;
    a missing cell is ``-``. Integers are printed as integers, other numbers
    with ``precision`` decimals. Non-scalar values (dicts, lists, strings) are
    skipped.

    Args:
        results: one mapping of metric name to value per row.
        precision: decimals for floats (>= 0).
        percent: print floats x 100 with ``precision - 2`` decimals (the
            accuracies of the protocols are fractions).
        row_header: header of the first column.

    Returns:
        The table, lines joined by ``\\n``, ending without a newline.

    Raises:
        TypeError: if ``results`` or a row is not a mapping.
        ValueError: if ``results`` is empty, has no scalar entry, or
            ``precision`` < 0.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a mapping of row name to metrics, got {type(results).__name__}")
    if not results:
        raise ValueError("results is empty: expected at least one row")
    if isinstance(precision, bool) or not isinstance(precision, int) or precision < 0:
        raise ValueError(f"precision must be an int >= 0, got {precision!r}")
    columns: list[str] = []
    for name, row in results.items():
        if not isinstance(row, Mapping):
            raise TypeError(f"results[{name!r}] must be a mapping of metric to value, got {type(row).__name__}")
        for key, value in row.items():
            if _is_scalar(value) and key not in columns:
                columns.append(str(key))
    if not columns:
        raise ValueError("results has no scalar metric to tabulate")
    lines = [
        "| " + " | ".join([row_header] + columns) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|",
    ]
    for name, row in results.items():
        cells = [
            _format_cell(row[c], precision, percent) if c in row and _is_scalar(row[c]) else "-" for c in columns
        ]
        lines.append("| " + " | ".join([str(name)] + cells) + " |")
    return "\n".join(lines)


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, numpy values, paths, tuples and sets to JSON types (recursively).

    Raises:
        TypeError: for a value that has no JSON form (e.g. an ``nn.Module``).
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write a {type(obj).__name__} to JSON")


def write_json(obj: Any, path: str | Path, indent: int = 2) -> Path:
    """Write results as JSON (parent directories created); return the path.

    Raises:
        TypeError: if a value cannot be converted by :func:`to_jsonable`.
    """
    path = Path(path)
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file (one dict per line; blank lines skipped).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the line that is not a JSON object.
    """
    path = Path(path)
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number} is not valid JSON: {exc}") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number} holds a {type(record).__name__}, expected a JSON object")
            records.append(record)
    return records
