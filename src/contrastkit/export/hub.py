"""The ``hub`` format: a folder laid out as the Hugging Face Hub expects a model repository.

``FOLDER/model.safetensors`` holds the backbone's tensors under torchvision / timm names (g's under ``head.`` with
``--include-head``) and the export metadata in its header; ``FOLDER/config.json`` holds the same metadata
(architecture, stem, width, input size, mean/std, feature dimension, head) and the list of the folder's files;
``FOLDER/README.md`` is the model card (:mod:`.model_card`). Nothing is uploaded: ``huggingface_hub``'s
``upload_folder`` takes the folder as it is (``ignore_patterns=".*"`` leaves out contrastkit's bookkeeping,
``.contrastkit.json`` and the writer's lock file, which every folder contrastkit writes holds).
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

__all__ = ["hub_paths", "write_hub", "reload_hub", "read_hub"]

Features = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]


def hub_paths(folder: Path) -> dict[str, Path]:
    """The files of a hub folder by role: ``main`` (the weights, published last), ``config`` and ``card``."""
    return {"main": folder / HUB_WEIGHTS, "config": folder / HUB_CONFIG, "card": folder / HUB_CARD}


def write_hub(source: ExportSource, meta: dict[str, Any], paths: dict[str, Path]) -> None:
    """The hub folder's three files, at ``paths`` (:func:`hub_paths`, or temporary names beside them)."""
    st = require("safetensors.torch", "safetensors", "--format hub")
    tensors = backbone_state_dict(source)
    if meta["include_head"]:
        tensors.update({HEAD_PREFIX + k: v for k, v in head_state_dict(source).items()})
    st.save_file(tensors, str(paths["main"]), metadata=encode_metadata(meta))
    config = {**meta, "files": list(HUB_FILES)}
    paths["config"].write_text(json.dumps(config, indent=2) + "\n")
    paths["card"].write_text(model_card(source, meta))


def _config(path: Path) -> dict[str, Any]:
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

    config = _config(folder / HUB_CONFIG)
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
    """Load the hub files back through the safetensors package into the target library's module, as a user would
    from ``config.json``."""
    config = _config(paths["config"])
    if {k: v for k, v in config.items() if k != "files"} != meta:
        raise ExportError(f"{paths['config']} does not read back as written")
    if sorted(config["files"]) != sorted(HUB_FILES):
        raise ExportError(f"{paths['config']} lists other files than a hub folder holds: {config['files']}")
    return reload_safetensors({"main": paths["main"]}, meta)
