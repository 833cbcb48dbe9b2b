"""The export formats, what each holds, and the optional packages each needs (no torch import here).

``contrastkit export --format F`` writes one of :data:`FORMATS`. The state-dict formats (``torchvision``,
``timm``) keep their metadata in a sidecar JSON file next to the weights (:func:`sidecar_path`), because a
state_dict has no place for it; the others carry it inside the file, and ``hub`` is a folder (weights,
``config.json``, model card).

A file's name says which reader opens it (:data:`SUFFIXES`): :func:`contrastkit.load_encoder` picks the reader by
the name and checks the bytes before reading, and TorchScript and ``torch.export`` archives, which hold code, are
run only from files named for them.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

__all__ = ["FORMATS", "STATE_DICT_FORMATS", "SUFFIXES", "ExportError", "require", "sidecar_path", "head_path",
           "packages_for", "check_out_name"]

#: every format ``contrastkit export`` writes
FORMATS = ("torchvision", "timm", "safetensors", "torchscript", "onnx", "pt2", "hub")

#: the file name ending of each format that has one of its own (the state-dict formats take any other name)
SUFFIXES = {"safetensors": ".safetensors", "torchscript": ".torchscript", "onnx": ".onnx", "pt2": ".pt2"}

#: the formats whose file is a plain state_dict (``torch.save``), with metadata in a sidecar JSON
STATE_DICT_FORMATS = ("torchvision", "timm")

#: format -> (importable module, the contrastkit extra that installs it)
_PACKAGES = {
    "safetensors": (("safetensors", "safetensors"),),
    "hub": (("safetensors", "safetensors"),),
    "onnx": (("onnx", "onnx"), ("onnxruntime", "onnx"), ("onnxscript", "onnx")),
}


class ExportError(ValueError):
    """An export that cannot be made or did not verify, or a file :func:`load_encoder` cannot read."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional package, or raise an :class:`ExportError` naming the extra that installs it.

    Args:
        module: the module to import (``"onnxruntime"``).
        extra: the contrastkit extra that installs it (``"onnx"``).
        purpose: what needs it, for the message (``"--format onnx"``).

    Raises:
        ExportError: the package is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExportError(f"{purpose} needs the optional package {module!r}, which is not installed: "
                          f"pip install 'contrastkit[{extra}]'") from exc


def check_out_name(path: Path, fmt: str) -> None:
    """``--out`` is named for its format, so that :func:`contrastkit.load_encoder` picks the right reader.

    Raises:
        ExportError: a format with a suffix of its own given another name, or a state-dict format given a name
            that another format's reader owns.
    """
    suffix = path.suffix.lower()
    if fmt in SUFFIXES and suffix != SUFFIXES[fmt]:
        raise ExportError(f"--format {fmt} writes a file named *{SUFFIXES[fmt]} (load_encoder picks its reader by "
                          f"the name), got --out {path}")
    if fmt in STATE_DICT_FORMATS and suffix in SUFFIXES.values():
        raise ExportError(f"--format {fmt} writes a torch.save state_dict, but --out {path} ends in {suffix}, the "
                          f"name of another format; use .pt or .pth")


def packages_for(fmt: str) -> tuple[tuple[str, str], ...]:
    """The (module, extra) pairs a format needs beyond torch and torchvision (timm is checked per encoder)."""
    return _PACKAGES.get(fmt, ())


def sidecar_path(path: str | Path) -> Path:
    """The metadata JSON written next to a state-dict export: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def head_path(path: str | Path) -> Path:
    """Where a state-dict export with ``--include-head`` writes g's state_dict: ``<path>.head.pt``."""
    path = Path(path)
    return path.with_name(path.name + ".head.pt")
