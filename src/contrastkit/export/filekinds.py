"""What a file is: its reader, chosen by its name and checked against its bytes, and whether contrastkit export
wrote it (no torch import here).

:func:`reader_for` maps a path to the reader :func:`contrastkit.load_encoder` uses: ``*.onnx``, ``*.safetensors``,
``*.torchscript``, ``*.pt2``, a hub folder (``config.json`` + ``model.safetensors``), and any other file a
``torch.save`` archive read with ``weights_only=True``. The bytes must match the name before anything reads them:
a TorchScript or ``torch.export`` archive (both code-like) under another name is refused, never run.
:func:`written_by_export` is what ``contrastkit export`` asks before it replaces a file or folder.
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any

from .formats import SUFFIXES, ExportError, sidecar_path

__all__ = ["reader_for", "written_by_export", "export_kind", "safetensors_header", "zip_names", "HUB_FILES", "HUB_CONFIG",
           "HUB_WEIGHTS", "HUB_CARD"]

HUB_CONFIG, HUB_WEIGHTS, HUB_CARD = "config.json", "model.safetensors", "README.md"
#: the files of a hub folder
HUB_FILES = (HUB_WEIGHTS, HUB_CONFIG, HUB_CARD)
#: the name of the metadata file inside TorchScript and torch.export archives (graphs.METADATA_FILE)
_ARCHIVE_METADATA = "extra/contrastkit.json"


def zip_names(path: Path) -> list[str] | None:
    """The member names of a zip archive, or None when ``path`` is not one."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return None
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except zipfile.BadZipFile as exc:
        raise ExportError(f"{path} is a damaged zip archive: {exc}") from exc


def _is_torchscript(names: list[str]) -> bool:
    return any("/code/" in n or n.endswith("/constants.pkl") for n in names)


def _is_pt2(names: list[str]) -> bool:
    return any(n.endswith("/archive_format") for n in names) and any("/models/" in n for n in names)


def safetensors_header(path: Path) -> dict[str, Any] | None:
    """The JSON header of a safetensors file, or None when the bytes are not one (read without the package)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (length,) = struct.unpack("<Q", head)
        if not 2 <= length <= size - 8:
            return None
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, ValueError):
            return None
    return header if isinstance(header, dict) else None


def _is_onnx(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == b"\x08"  # a ModelProto starts with field 1, ir_version (a varint)


def _hub_folder(path: Path) -> bool:
    return (path / HUB_CONFIG).is_file() and (path / HUB_WEIGHTS).is_file()


#: ``format=`` of load_encoder -> the reader (torchvision and timm state_dicts are torch.save archives)
FORMAT_READERS = {"torch": "torch", "checkpoint": "torch", "torchvision": "torch", "timm": "torch",
                  "safetensors": "safetensors", "torchscript": "torchscript", "onnx": "onnx", "pt2": "pt2"}


def reader_for(path: Path, fmt: str | None = None) -> str:
    """The reader of ``path`` by its name (or by ``fmt``, when given), once its bytes are checked to match:
    ``hub``, ``onnx``, ``safetensors``, ``torchscript``, ``pt2`` or ``torch`` (a checkpoint or state_dict,
    ``weights_only``).

    Raises:
        ExportError: an unknown ``fmt``, bytes that do not match the name (or ``fmt``), or a code-like archive
            under a name that does not ask for it.
    """
    if path.is_dir():
        if not _hub_folder(path):
            raise ExportError(f"{path} is a folder without {HUB_CONFIG} and {HUB_WEIGHTS}: not a hub export")
        return "hub"
    if fmt is not None and fmt not in FORMAT_READERS:
        raise ExportError(f"format must be one of {', '.join(FORMAT_READERS)}, got {fmt!r}")
    suffix = path.suffix.lower() if fmt is None else SUFFIXES.get(FORMAT_READERS[fmt], ".pt")
    kinds = {v: k for k, v in SUFFIXES.items()}
    names = zip_names(path)
    said = f"is named {suffix}" if fmt is None else f"is read as format={fmt!r}"
    if suffix == ".onnx" and not _is_onnx(path):
        raise ExportError(f"{path} {said} but is not an ONNX model (it starts with {_first(path)!r})")
    if suffix == ".safetensors" and safetensors_header(path) is None:
        raise ExportError(f"{path} {said} but has no safetensors header")
    if suffix == ".torchscript" and not (names and _is_torchscript(names)):
        raise ExportError(f"{path} {said} but is not a TorchScript archive")
    if suffix == ".pt2" and not (names and _is_pt2(names)):
        raise ExportError(f"{path} {said} but is not a torch.export archive")
    if suffix in kinds:
        return kinds[suffix]
    if names is None:
        raise ExportError(f"{path} is not a contrastkit checkpoint or export (expected a checkpoint, a torchvision / "
                          f"timm state_dict with its .json sidecar, or a file named *.safetensors, *.torchscript, "
                          f"*.pt2 or *.onnx)")
    for code_like, name in ((_is_torchscript, "TorchScript"), (_is_pt2, "torch.export")):
        if code_like(names):
            wanted = ".torchscript" if name == "TorchScript" else ".pt2"
            raise ExportError(f"{path} is a {name} archive, which holds code: load_encoder runs one only from a file "
                              f"named *{wanted}; rename it if you trust where it came from")
    return "torch"


def _first(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


def _metadata_file(path: Path) -> bool:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(meta, dict) and "contrastkit_export" in meta


def _onnx_has_metadata(path: Path) -> bool:
    if not _is_onnx(path):
        return False
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not parseable (or onnx missing): not provably ours
        return False
    return any(prop.key == "contrastkit" for prop in model.metadata_props)


def written_by_export(path: Path) -> bool:
    """Whether ``path`` (a file or folder that exists) was written by ``contrastkit export``: its contrastkit
    metadata is where its format keeps it (for a state_dict or its ``.head.pt``, in the ``.json`` sidecar; for a
    hub folder, in ``config.json``, which also lists every file of the folder)."""
    if path.is_dir():
        config = path / HUB_CONFIG
        if not _metadata_file(config):
            return False
        listed = set(json.loads(config.read_text()).get("files", ()))
        return {p.name for p in path.iterdir()} <= listed
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        header = safetensors_header(path)
        return bool(header) and "contrastkit_export" in (header.get("__metadata__") or {})
    if suffix in (".torchscript", ".pt2"):
        names = zip_names(path)
        return bool(names) and any(n.endswith(_ARCHIVE_METADATA) for n in names)
    if suffix == ".onnx":
        return _onnx_has_metadata(path)
    if path.name.endswith(".head.pt"):
        return _metadata_file(sidecar_path(path.with_name(path.name[:-len(".head.pt")])))
    if suffix == ".json" and _metadata_file(path):
        return True
    return _metadata_file(sidecar_path(path))


def export_kind(path: Path) -> str | None:
    """What export ``path`` is, by its name (its bytes are checked when it is read): ``hub`` (a folder holding
    ``config.json`` and ``model.safetensors``), ``safetensors``, ``torchscript``, ``onnx``, ``pt2``, or the
    format its sidecar names (``torchvision``, ``timm``) for a file with a ``<name>.json`` sidecar; None for
    anything else (a checkpoint, a run folder, a path that does not exist)."""
    if path.is_dir():
        return "hub" if _hub_folder(path) else None
    if not path.is_file():
        return None
    kinds = {v: k for k, v in SUFFIXES.items()}
    if path.suffix.lower() in kinds:
        return kinds[path.suffix.lower()]
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        meta = None
    fmt = meta.get("export_format") if isinstance(meta, dict) else None
    return fmt if isinstance(fmt, str) and fmt else "state_dict"
