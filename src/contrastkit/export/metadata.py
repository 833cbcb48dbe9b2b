"""The export metadata as flat string pairs (safetensors, ONNX) and as a JSON sidecar (state-dict formats).

safetensors and ONNX store metadata as ``str -> str``. Each key is stored under its own name so that a user
inspecting the file reads ``architecture = resnet18``: strings as they are, every other value as JSON, and
``None`` left out. :func:`decode_metadata` inverts :func:`encode_metadata` exactly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .formats import ExportError

__all__ = ["encode_metadata", "decode_metadata", "check_metadata", "write_sidecar", "read_sidecar"]

#: keys whose values are strings, stored verbatim
_STRING_KEYS = frozenset({"export_format", "architecture", "library", "stem", "contrastkit_version", "method",
                          "data"})
#: every key of the schema (absent ones decode to None)
_KEYS = ("contrastkit_export", "export_format", "architecture", "library", "width", "stem", "input_size", "mean",
         "std", "feature_dim", "contrastkit_version", "method", "data", "include_head", "head", "dynamic_axes",
         "config")


def encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """Flat ``str -> str`` pairs; ``format: pt`` is the safetensors convention for PyTorch tensors."""
    out = {"format": "pt"}
    for key, value in meta.items():
        if value is None:
            continue
        out[key] = value if key in _STRING_KEYS else json.dumps(value, sort_keys=True)
    return out


def decode_metadata(pairs: dict[str, str] | None, where: str) -> dict[str, Any]:
    """The metadata dict of :func:`encode_metadata`'s pairs.

    Raises:
        ExportError: the pairs are not contrastkit export metadata.
    """
    pairs = pairs or {}
    if "contrastkit_export" not in pairs:
        raise ExportError(f"{where} has no contrastkit metadata (key 'contrastkit_export'); it was not written by "
                          f"contrastkit export")
    try:
        return {key: (pairs[key] if key in _STRING_KEYS else json.loads(pairs[key])) if key in pairs else None
                for key in _KEYS}
    except json.JSONDecodeError as exc:
        raise ExportError(f"{where} has malformed contrastkit metadata: {exc}") from exc


def check_metadata(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """The fields :func:`contrastkit.load_encoder` needs are there and well formed.

    Raises:
        ExportError: naming the missing or malformed field.
    """
    for key in ("architecture", "input_size", "mean", "std"):
        if meta.get(key) is None:
            raise ExportError(f"{where}: contrastkit metadata lacks {key!r}")
    size = meta["input_size"]
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)):
        raise ExportError(f"{where}: input_size must be [3, H, W] with positive integers, got {size!r}")
    for key in ("mean", "std"):
        if not (isinstance(meta[key], list) and len(meta[key]) == 3):
            raise ExportError(f"{where}: {key} must be 3 numbers, got {meta[key]!r}")
    return meta


def write_sidecar(meta: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_sidecar(path: Path) -> dict[str, Any]:
    """The metadata of a state-dict export from its sidecar JSON.

    Raises:
        ExportError: the file is not valid JSON or not contrastkit export metadata.
    """
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read the export metadata {path}: {exc}") from exc
    if not isinstance(meta, dict) or "contrastkit_export" not in meta:
        raise ExportError(f"{path} is not contrastkit export metadata (no key 'contrastkit_export')")
    return meta
