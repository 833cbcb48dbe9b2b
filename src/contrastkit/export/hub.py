"""The ``hub`` format: a folder laid out as the Hugging Face Hub expects a model repository.

``FOLDER/model.safetensors`` holds the backbone's tensors under torchvision / timm names (g's under ``head.`` with
``--include-head``) and the export metadata in its header; ``FOLDER/config.json`` holds the same metadata
(architecture, stem, width, input size, mean/std, feature dimension, head) and the list of the folder's files;
``FOLDER/README.md`` is the model card (:mod:`.model_card`). Nothing is uploaded: ``huggingface_hub``'s
``upload_folder`` takes the folder as it is.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from .filekinds import HUB_CARD, HUB_CONFIG, HUB_FILES, HUB_WEIGHTS
from .formats import ExportError, require
from .metadata import check_metadata, decode_metadata, encode_metadata
from .model_card import model_card
from .source import ExportSource, backbone_state_dict, head_state_dict
from .state_dicts import HEAD_PREFIX, reload_safetensors

__all__ = ["write_hub", "reload_hub", "read_hub"]

Features = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


def write_hub(source: ExportSource, meta: dict[str, Any], paths: dict[str, Path]) -> None:
    """The folder ``paths["main"]`` (created here): weights, config and model card."""
    st = require("safetensors.torch", "safetensors", "--format hub")
    folder = paths["main"]
    folder.mkdir()
    tensors = backbone_state_dict(source)
    if meta["include_head"]:
        tensors.update({HEAD_PREFIX + k: v for k, v in head_state_dict(source).items()})
    st.save_file(tensors, str(folder / HUB_WEIGHTS), metadata=encode_metadata(meta))
    config = {**meta, "files": list(HUB_FILES)}
    (folder / HUB_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (folder / HUB_CARD).write_text(model_card(source, meta))


def _config(folder: Path) -> dict[str, Any]:
    path = folder / HUB_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict) or "contrastkit_export" not in config:
        raise ExportError(f"{path} is not a contrastkit export's config (no key 'contrastkit_export')")
    return config


def read_hub(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a hub folder; ``config.json`` and the weights' header must agree.

    Raises:
        ExportError: a config that is not contrastkit's, weights that are not safetensors, or the two
            describing different encoders.
    """
    st = require("safetensors.torch", "safetensors", f"reading {folder}")
    from safetensors import safe_open

    config = _config(folder)
    weights = folder / HUB_WEIGHTS
    try:
        with safe_open(str(weights), framework="pt") as f:
            pairs = f.metadata()
        tensors = st.load_file(str(weights))
    except Exception as exc:  # safetensors raises its own SafetensorError for a malformed header
        raise ExportError(f"{weights} is not a readable safetensors file ({type(exc).__name__}: {exc})") from exc
    meta = decode_metadata(pairs, str(weights))
    differ = [k for k in ("architecture", "width", "stem", "input_size", "mean", "std", "feature_dim")
              if config.get(k) != meta.get(k)]
    if differ:
        raise ExportError(f"{folder}: {HUB_CONFIG} and {HUB_WEIGHTS} describe different encoders ({', '.join(differ)})")
    return tensors, check_metadata(meta, str(weights))


def reload_hub(paths: dict[str, Path], meta: dict[str, Any]) -> Features:
    """Load a hub folder back through the safetensors package into the target library's module, as a user would
    from ``config.json``."""
    folder = paths["main"]
    config = _config(folder)
    if {k: v for k, v in config.items() if k != "files"} != meta:
        raise ExportError(f"{folder / HUB_CONFIG} does not read back as written")
    if sorted(p.name for p in folder.iterdir()) != sorted(config["files"]):
        raise ExportError(f"{folder} holds other files than its {HUB_CONFIG} lists")
    return reload_safetensors({"main": folder / HUB_WEIGHTS}, meta)
