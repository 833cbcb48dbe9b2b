"""The state-dict formats: ``torchvision`` and ``timm`` (``torch.save`` of the backbone's state_dict plus a
sidecar JSON) and ``safetensors`` (the same tensor names, metadata in the file's header).

With ``--include-head``, g goes to ``<out>.head.pt`` for the first two (the backbone file stays loadable with
``strict=True``) and under the ``head.`` prefix in the safetensors file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..models import read_torch_file
from .formats import ExportError, require
from .metadata import decode_metadata, encode_metadata, read_sidecar, write_sidecar
from .rebuild import build_head, target_backbone
from .source import ExportSource, backbone_state_dict, head_state_dict

__all__ = ["write_state_dict", "reload_state_dict", "write_safetensors", "reload_safetensors", "split_head",
           "HEAD_PREFIX"]

#: prefix of g's tensors in a safetensors export made with ``--include-head``
HEAD_PREFIX = "head."

Features = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


def write_state_dict(source: ExportSource, meta: dict[str, Any], paths: dict[str, Path]) -> None:
    """``paths["main"]``: the backbone's state_dict; ``paths["sidecar"]``: the metadata; ``paths["head"]``: g."""
    torch.save(backbone_state_dict(source), paths["main"])
    write_sidecar(meta, paths["sidecar"])
    if "head" in paths:
        torch.save(head_state_dict(source), paths["head"])


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> nn.Module:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"{what} does not load with strict=True: {exc}") from exc
    return module.eval()


def _features(backbone: nn.Module, head: nn.Module | None) -> Features:
    def run(x: torch.Tensor):
        with torch.no_grad():
            h = backbone(x)  # (N, F)
            return h, (head(h) if head is not None else None)  # (N, D)
    return run


def reload_state_dict(paths: dict[str, Path], meta: dict[str, Any]) -> Features:
    """Load a torchvision / timm export back into a fresh module of that library (``strict=True``)."""
    stored = read_sidecar(paths["sidecar"])
    if stored != meta:
        raise ExportError(f"the sidecar {paths['sidecar']} does not read back as written")
    backbone = _load_strict(target_backbone(meta), read_torch_file(paths["main"]),
                            f"the {meta['library']} state_dict")
    head = None
    if "head" in paths:
        head = _load_strict(build_head(meta["head"]), read_torch_file(paths["head"]), "g")
    return _features(backbone, head)


def split_head(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(backbone tensors, g's tensors with ``head.`` removed) of a safetensors export."""
    backbone = {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}
    head = {k[len(HEAD_PREFIX):]: v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    return backbone, head


def write_safetensors(source: ExportSource, meta: dict[str, Any], paths: dict[str, Path]) -> None:
    """The backbone's tensors under torchvision / timm names (and g's under ``head.``), metadata in the header."""
    st = require("safetensors.torch", "safetensors", "--format safetensors")
    tensors = backbone_state_dict(source)
    if meta["include_head"]:
        tensors.update({HEAD_PREFIX + k: v for k, v in head_state_dict(source).items()})
    st.save_file(tensors, str(paths["main"]), metadata=encode_metadata(meta))


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, decoded metadata) of a safetensors file.

    Raises:
        ExportError: the file is not safetensors, or has no contrastkit metadata.
    """
    st = require("safetensors.torch", "safetensors", f"reading {path}")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            pairs = f.metadata()
        tensors = st.load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError for a malformed header
        raise ExportError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    return tensors, decode_metadata(pairs, str(path))


def reload_safetensors(paths: dict[str, Path], meta: dict[str, Any]) -> Features:
    """Load a safetensors export back through the safetensors package into the target library's module."""
    tensors, stored = read_safetensors(paths["main"])
    if stored != meta:
        raise ExportError(f"the metadata of {paths['main']} does not read back as written")
    backbone_t, head_t = split_head(tensors)
    backbone = _load_strict(target_backbone(meta), backbone_t, "the safetensors tensors")
    head = _load_strict(build_head(meta["head"]), head_t, "g's safetensors tensors") if meta["include_head"] else None
    return _features(backbone, head)
