"""``load_encoder``: any contrastkit export, checkpoint or run folder -> (encoder returning h, its transform).

The reader is chosen by the file's name (or an explicit ``format=``), never by its contents: ``*.pt`` / ``*.pth``
is a ``torch.save`` file (a checkpoint, or a torchvision / timm state_dict with the ``<path>.json`` sidecar that
``contrastkit export`` writes beside it), ``*.safetensors`` safetensors, ``*.onnx`` ONNX, and ``*.torchscript``
TorchScript. The bytes are then checked against that reader before it runs: a TorchScript archive under any other
name is refused, since TorchScript is code and loading it runs that code.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import transforms

from ..models import CheckpointError, Encoder, is_torchscript_archive, load_checkpoint_model, read_torch_file
from .formats import ExportError, sidecar_path
from .graphs import load_torchscript, onnx_session
from .metadata import check_metadata, read_sidecar
from .rebuild import target_backbone
from .state_dicts import read_safetensors, split_head
from .transform import evaluation_transform

__all__ = ["load_encoder", "OnnxEncoder"]


class OnnxEncoder(nn.Module):
    """An onnxruntime session of an ONNX export as a module: ``forward(x) -> h`` (CPU, float32).

    Shape:
        x (N, 3, H, W) normalised -> h (N, feature_dim), on ``x``'s device.
    """

    def __init__(self, session: Any, feature_dim: int) -> None:
        super().__init__()
        self.session = session
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected a batch (N, 3, H, W), got shape {tuple(x.shape)}")
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (h,) = self.session.run(["h"], {"input": array})
        return torch.from_numpy(h).to(x.device)  # (N, feature_dim)


def _resolve(path: Path) -> Path:
    """The file to read: ``path``, or a run folder's ``last.pt``."""
    if path.is_dir():
        if not (path / "last.pt").is_file():
            raise ExportError(f"{path} is a folder without last.pt; expected an export written by contrastkit "
                              f"export, a checkpoint, or a run folder")
        return path / "last.pt"
    if not path.is_file():
        raise ExportError(f"{path} does not exist (expected an export written by contrastkit export, a checkpoint, "
                          f"or a run folder)")
    return path


#: a file name's suffix -> the reader that opens it
READERS = {".pt": "torch", ".pth": "torch", ".safetensors": "safetensors", ".torchscript": "torchscript",
           ".onnx": "onnx"}
#: ``format=`` values: the readers, and the export formats (torchvision and timm are torch.save files)
FORMAT_READERS = {"torch": "torch", "checkpoint": "torch", "torchvision": "torch", "timm": "torch",
                  "safetensors": "safetensors", "torchscript": "torchscript", "onnx": "onnx"}


def _reader(path: Path, fmt: str | None) -> str:
    """The reader of ``path``: from ``fmt`` when given, else from the file's name.

    Raises:
        ExportError: an unknown ``fmt``, or a name that says no format.
    """
    if fmt is not None:
        if fmt not in FORMAT_READERS:
            raise ExportError(f"format must be one of {', '.join(FORMAT_READERS)}, got {fmt!r}")
        return FORMAT_READERS[fmt]
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ExportError(f"{path}: the name does not say which format it is; load_encoder reads "
                          f"{', '.join('*' + k for k in READERS)} (a checkpoint, or an export named as contrastkit "
                          f"export names it), or pass format=")
    return reader


def _check_bytes(path: Path, reader: str, by: str) -> None:
    """Refuse a file whose bytes are not what its reader expects (before the reader runs).

    Raises:
        ExportError: naming the file, what its name says and what its bytes are.
    """
    with open(path, "rb") as f:
        head = f.read(9)
    names = None
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as exc:
            raise ExportError(f"{path} is a damaged zip archive: {exc}") from exc
    scripted = names is not None and is_torchscript_archive(names)
    if reader == "torch" and scripted:
        raise ExportError(f"{path} is a TorchScript archive, not a torch.save file of tensors: TorchScript is code, "
                          f"which load_encoder runs only from a file named *.torchscript (or with "
                          f"format='torchscript'); it was not loaded")
    expected = {"torch": names is not None and not scripted, "torchscript": scripted,
                "safetensors": len(head) == 9 and head[8:9] == b"{"
                and int.from_bytes(head[:8], "little") < path.stat().st_size,
                "onnx": head[:1] == b"\x08"}[reader]
    if not expected:
        what = {"torch": "a torch.save archive", "torchscript": "a TorchScript archive",
                "safetensors": "safetensors", "onnx": "an ONNX model"}[reader]
        raise ExportError(f"{path} is read as {reader} (from its {by}), but its bytes are not {what}; it was not "
                          f"loaded")


def _rebuilt(meta: dict[str, Any], backbone_state: dict[str, torch.Tensor], where: str) -> Encoder:
    """The target library's backbone with the exported weights, loaded strictly, as a contrastkit Encoder."""
    backbone = target_backbone(meta)
    try:
        backbone.load_state_dict(backbone_state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"the weights of {where} do not match its metadata's {meta['architecture']}: {exc}") from exc
    return Encoder(backbone, int(meta.get("feature_dim") or 0), meta["architecture"])


def _from_torch_file(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint (model + config) or a state-dict export with its sidecar."""
    try:
        state = read_torch_file(path)
    except CheckpointError as exc:  # bad pickle, truncated archive
        raise ExportError(f"{path} is not a readable torch file: {str(exc).split(': ', 1)[-1]}") from exc
    if isinstance(state, dict) and "model" in state and "config" in state:
        model, meta, config = load_checkpoint_model(path, "cpu")
        size = meta.image_size
        return model.encoder, {"input_size": [3, size, size], "mean": list(meta.mean), "std": list(meta.std),
                               "architecture": config.get("encoder")}
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ExportError(f"{path} is a torch file but neither a contrastkit checkpoint (keys 'model' and 'config') "
                          f"nor a state_dict of tensors")
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise ExportError(
            f"{path} is a plain state_dict, which does not say which architecture, input size and normalisation "
            f"it was trained with; load_encoder reads them from the sidecar {sidecar} that contrastkit export "
            f"writes beside it. Keep the two files together, or export to safetensors, torchscript or onnx, "
            f"which carry the metadata inside the file")
    meta = check_metadata(read_sidecar(sidecar), str(sidecar))
    return _rebuilt(meta, state, str(path)), meta


def _load(path: Path, device: torch.device, fmt: str | None) -> tuple[nn.Module, dict[str, Any]]:
    kind = _reader(path, fmt)
    _check_bytes(path, kind, "name" if fmt is None else "format=")
    if kind == "torch":
        return _from_torch_file(path)
    if kind == "torchscript":
        module, meta = load_torchscript(path, map_location=device)
        return module, check_metadata(meta, str(path))
    if kind == "safetensors":
        tensors, meta = read_safetensors(path)
        check_metadata(meta, str(path))
        return _rebuilt(meta, split_head(tensors)[0], str(path)), meta
    if device.type != "cpu":
        raise ExportError(f"an ONNX export runs on the CPU through onnxruntime here; got device={device}")
    session, meta = onnx_session(path)
    check_metadata(meta, str(path))
    return OnnxEncoder(session, int(meta.get("feature_dim") or 0)), meta


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu", format: str | None = None
                 ) -> tuple[nn.Module, transforms.Compose]:
    """Load an encoder f from any contrastkit export, checkpoint or run folder, with its preprocessing.

    Args:
        path: a file written by ``contrastkit export`` (torchvision or timm state_dict with its ``.json``
            sidecar, safetensors, TorchScript, ONNX), a checkpoint written by ``contrastkit pretrain``, or a
            run folder (its ``last.pt``).
        device: where the encoder runs (ONNX exports: the CPU only).
        format: the reader, when the file's name does not say it: ``torch`` (also ``checkpoint``,
            ``torchvision``, ``timm``), ``safetensors``, ``torchscript`` or ``onnx``. Without it the name decides:
            ``*.pt`` / ``*.pth``, ``*.safetensors``, ``*.torchscript``, ``*.onnx``. TorchScript is code: it is run
            only from a ``*.torchscript`` file or with ``format="torchscript"``.

    Returns:
        ``(encoder, transform)``: ``encoder`` is an ``nn.Module`` in eval mode mapping a normalised batch to h;
        ``transform`` maps a PIL image to that normalised input (resize, centre crop, tensor, normalise), as
        contrastkit evaluates.

    Shape:
        ``encoder``: (N, 3, S, S) -> (N, feature_dim); ``transform``: PIL image -> (3, S, S).

    Raises:
        ExportError: the file's name says no format, its bytes are not what its name (or ``format``) says, it is
            not a contrastkit export or checkpoint, a state_dict lacks its sidecar, or an optional package it needs
            is missing (the message names the extra to install).
        CheckpointError: a checkpoint that does not match its own config.
    """
    resolved = _resolve(Path(path).expanduser())
    device = torch.device(device)
    encoder, meta = _load(resolved, device, format)
    _, height, width = meta["input_size"]
    if height != width:
        raise ExportError(f"{resolved}: expected a square input size, got {height}x{width}")
    return encoder.to(device).eval(), evaluation_transform(height, meta["mean"], meta["std"])
