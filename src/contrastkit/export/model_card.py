"""The model card (``README.md``) of a hub export: what the encoder is, how it was trained, how it scored, and
how to load it, with contrastkit and without.

Everything comes from the checkpoint (its config and progress) and from the evaluations ``contrastkit eval``
wrote beside it (``eval_*.json``). A local folder of images is named by its last component only, so that a card
made to be shared does not carry the path of the machine it was trained on.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..models import load_checkpoint
from .source import ExportSource
from .torchvision_code import torchvision_build_lines

__all__ = ["model_card", "evaluations_beside"]

#: the options the card's recipe table shows, in order
_RECIPE = ("method", "loss", "temperature", "encoder", "width", "head", "head_layers", "proj_dim", "batch_size",
           "epochs", "optimizer", "lr", "lr_scaling", "weight_decay", "warmup_epochs", "preset", "size",
           "crop_scale", "color_strength", "blur", "n_views", "seed")
_NAMED_DATA = ("digits", "cifar10", "cifar100", "stl10")


def _data_name(data: Any) -> str:
    text = str(data or "unknown")
    return text if text in _NAMED_DATA else f"a local image folder named `{Path(text).name}`"


def evaluations_beside(checkpoint: Path) -> list[tuple[str, dict[str, Any]]]:
    """(name, numeric metrics) of each ``eval_<protocol>.json`` next to ``checkpoint`` (not the combined
    ``eval_all``, whose protocols have files of their own, nor the fine-tuning subsets' ``_indices``)."""
    found = []
    for path in sorted(checkpoint.parent.glob("eval_*.json")):
        if path.stem.startswith("eval_all") or path.stem.endswith("_indices"):
            continue
        try:
            result = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        metrics = result.get("metrics") if isinstance(result, dict) else None
        if isinstance(metrics, dict):
            numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            label = path.stem[len("eval_"):] + (f" (on {_data_name(result['data'])})" if result.get("transfer") else "")
            found.append((label, numbers))
    return found


def _front_matter(meta: dict[str, Any]) -> list[str]:
    tags = ["contrastkit", "contrastive-learning", str(meta.get("method") or "simclr"), meta["library"]]
    return ["---", "library_name: contrastkit", "pipeline_tag: image-feature-extraction", "tags:",
            *[f"- {t}" for t in tags], "---", ""]


def _recipe(config: dict[str, Any]) -> list[str]:
    rows = [f"| {key} | {v if isinstance(v := config[key], str) else json.dumps(v)} |" for key in _RECIPE
            if key in config]
    return ["| option | value |", "| --- | --- |", *rows]


def _progress(saved: dict[str, Any]) -> str:
    history = saved.get("history") or []
    last_knn = next((r["knn_top1"] for r in reversed(history) if "knn_top1" in r), None)
    parts = [f"{int(saved.get('global_step', 0))} optimiser steps", f"{int(saved.get('epoch', 0))} epochs completed",
             f"{int(saved.get('images_seen', 0))} images seen", f"{float(saved.get('train_time', 0.0)):.0f} s of training"]
    if history:
        parts.append(f"final epoch loss {history[-1].get('loss', float('nan')):.4f}")
    if last_knn is not None:
        parts.append(f"kNN monitor top-1 {last_knn:.4f} (test split, k = 200)")
    return "; ".join(parts) + "."


def _evaluation(checkpoint: Path) -> list[str]:
    found = evaluations_beside(checkpoint)
    if not found:
        return ["No `contrastkit eval` results were found next to the checkpoint."]
    lines = ["| evaluation | metric | value |", "| --- | --- | ---: |"]
    for label, metrics in found:
        lines += [f"| {label} | {key} | {value:.4g} |" for key, value in metrics.items()]
    return lines


def _plain_loading(meta: dict[str, Any]) -> list[str]:
    if meta["library"] == "timm":
        build = ["import timm", f"model = timm.create_model({meta['architecture'].split(':', 1)[1]!r}, "
                                f"pretrained=False, num_classes=0)"]
    else:
        build = torchvision_build_lines(meta["architecture"], float(meta["width"]), meta["stem"]).splitlines()
    if meta.get("include_head"):  # g's tensors sit under head. in the same file
        load = ["tensors = safetensors.torch.load_file('model.safetensors')",
                "model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith('head.')})"]
    else:
        load = ["model.load_state_dict(safetensors.torch.load_file('model.safetensors'))"]
    return ["```python", "import safetensors.torch", *build, *load, "model.eval()", "```"]


def model_card(source: ExportSource, meta: dict[str, Any]) -> str:
    """The ``README.md`` of a hub folder (Markdown with the Hub's YAML front matter)."""
    saved = load_checkpoint(source.checkpoint)
    config = source.config
    size = meta["input_size"][1]
    lines = [*_front_matter(meta),
             f"# {str(meta.get('method') or '').upper()} {meta['architecture']} encoder (contrastkit)", "",
             f"The encoder f of a {meta.get('method')} run of contrastkit: it maps a normalised {size} x {size} RGB "
             f"image to h, a {meta['feature_dim']}-dimensional representation"
             + (", and g maps h to z (`head.*` tensors)." if meta.get("include_head") else "."), "",
             "## Training data", "", f"{_data_name(meta.get('data'))}, at {size} px.", "",
             "## Recipe", "", *_recipe(config), "", "## Training", "", _progress(saved), "",
             "## Evaluation", "", *_evaluation(source.checkpoint), "",
             "## How to load it", "", "With contrastkit (`pip install 'contrastkit[safetensors]'`):", "",
             "```python", "from contrastkit import load_encoder", "",
             "encoder, transform = load_encoder('THIS_FOLDER')   # transform: PIL image -> normalised tensor",
             "h = encoder(transform(image).unsqueeze(0))", "```", "",
             "Without contrastkit, with torchvision / timm and safetensors (the tensor names are the library's):", "",
             *_plain_loading(meta), "",
             f"Input: RGB, shorter side resized to {size} px (bicubic) and centre-cropped, scaled to [0, 1], then "
             f"normalised with mean {meta['mean']} and std {meta['std']}. `config.json` holds the same facts.", ""]
    return "\n".join(lines)
