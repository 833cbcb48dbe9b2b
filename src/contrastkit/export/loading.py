"""``load_encoder``: any contrastkit export, checkpoint or run folder -> (encoder returning h, its transform).

The reader is chosen by the file's name (or an explicit ``format=``) and the bytes are checked to match before
it is read (:func:`~.filekinds.reader_for`): ``*.onnx``, ``*.safetensors``, ``*.torchscript``, ``*.pt2``, a hub
folder (``config.json`` + ``model.safetensors``), a run folder (its ``last.pt``), and any other file as a
``torch.save`` archive read with ``weights_only=True`` (a checkpoint, or a torchvision / timm state_dict).
TorchScript and ``torch.export`` archives hold code and run only from files named for them (or with ``format=``
naming them). A state_dict carries no metadata of its own: it needs the ``<path>.json`` sidecar that
``contrastkit export`` writes beside it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import transforms

from ..models import CheckpointError, Encoder, load_checkpoint_model, read_torch_file
from .filekinds import reader_for
from .formats import ExportError, sidecar_path
from .graphs import load_torchscript, onnx_session
from .hub import read_hub
from .metadata import check_metadata, read_sidecar
from .program import load_pt2
from .rebuild import target_backbone
from .state_dicts import read_safetensors, split_head
from .transform import evaluation_transform

__all__ = ["load_encoder", "load_encoder_and_metadata", "OnnxEncoder"]


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
    """The file or folder to read: ``path``, a hub folder, or a run folder's ``last.pt``."""
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        if not (path / "last.pt").is_file():
            raise ExportError(f"{path} is a folder without last.pt or config.json; expected an export written by "
                              f"contrastkit export (a file, or a hub folder), a checkpoint, or a run folder")
        return path / "last.pt"
    if not path.is_file():
        raise ExportError(f"{path} does not exist (expected an export written by contrastkit export, a checkpoint, "
                          f"or a run folder)")
    return path


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
    kind = reader_for(path, fmt)
    if kind == "torch":
        return _from_torch_file(path)
    if kind == "torchscript":
        module, meta = load_torchscript(path, map_location=device)
        return module, check_metadata(meta, str(path))
    if kind == "pt2":
        module, meta = load_pt2(path)
        return module, check_metadata(meta, str(path))
    if kind in ("safetensors", "hub"):
        tensors, meta = read_safetensors(path) if kind == "safetensors" else read_hub(path)
        check_metadata(meta, str(path))
        return _rebuilt(meta, split_head(tensors)[0], str(path)), meta
    if device.type != "cpu":
        raise ExportError(f"an ONNX export runs on the CPU through onnxruntime here; got device={device}")
    session, meta = onnx_session(path)
    check_metadata(meta, str(path))
    return OnnxEncoder(session, int(meta.get("feature_dim") or 0)), meta


def load_encoder_and_metadata(path: str | os.PathLike, device: str | torch.device = "cpu",
                              format: str | None = None) -> tuple[nn.Module, transforms.Compose, dict[str, Any]]:
    """:func:`load_encoder`, and the export's metadata (:mod:`.metadata`'s keys: ``architecture``,
    ``input_size``, ``mean``, ``std``, and where the export carries them ``data``, ``method``, ``feature_dim``,
    ...; for a checkpoint, those of its input and architecture)."""
    resolved = _resolve(Path(path).expanduser())
    device = torch.device(device)
    encoder, meta = _load(resolved, device, format)
    _, height, width = meta["input_size"]
    if height != width:
        raise ExportError(f"{resolved}: expected a square input size, got {height}x{width}")
    return encoder.to(device).eval(), evaluation_transform(height, meta["mean"], meta["std"]), meta


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu", format: str | None = None
                 ) -> tuple[nn.Module, transforms.Compose]:
    """Load an encoder f from any contrastkit export, checkpoint or run folder, with its preprocessing.

    Args:
        path: a file written by ``contrastkit export`` (torchvision or timm state_dict with its ``.json``
            sidecar, ``*.safetensors``, ``*.torchscript``, ``*.onnx``, ``*.pt2``) or its hub folder, a checkpoint
            written by ``contrastkit pretrain``, or a run folder (its ``last.pt``). The name picks the reader.
        device: where the encoder runs (ONNX exports: the CPU only).
        format: the reader, when the file's name does not say it: ``torch`` (also ``checkpoint``,
            ``torchvision``, ``timm``), ``safetensors``, ``torchscript``, ``onnx`` or ``pt2``. Without it the name
            decides (any name without one of the suffixes is read as a ``torch.save`` archive of tensors).
            TorchScript and torch.export archives are code: they run only from a file named for them or with
            ``format`` naming them.

    Returns:
        ``(encoder, transform)``: ``encoder`` is an ``nn.Module`` in eval mode mapping a normalised batch to h;
        ``transform`` maps a PIL image to that normalised input (resize, centre crop, tensor, normalise), as
        contrastkit evaluates.

    Shape:
        ``encoder``: (N, 3, S, S) -> (N, feature_dim); ``transform``: PIL image -> (3, S, S).

    Raises:
        ExportError: the file's bytes are not what its name (or ``format``) says (a TorchScript or torch.export
            archive under another name is refused, never run), it is not a contrastkit export or checkpoint, a state_dict lacks its sidecar, or an optional package it needs
            is missing (the message names the extra to install).
        CheckpointError: a checkpoint that does not match its own config.
    """
    encoder, transform, _ = load_encoder_and_metadata(path, device, format)
    return encoder, transform
