"""Evaluation of a pretrained checkpoint: the protocols behind ``contrastkit eval`` and ``embed``.

Each protocol returns a dict and writes it as JSON beside the checkpoint
(``eval_<protocol>[_<data>].json``). Evaluating on another data set than the
checkpoint's is transfer: images are resized to the checkpoint's input size and
normalised with its statistics.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from .allocator import tune_malloc_for
from .config import PretrainConfig
from .data import EvalDataset, decode_to_array, load_dataset
from .model import ContrastiveModel
from .train.checkpoint import CheckpointError, load_checkpoint
from .train.setup import build_run_model, resolve_device

__all__ = ["load_pretrained", "evaluate_checkpoint", "embed_checkpoint", "preview_augment", "PROTOCOLS",
           "evaluation_data"]

PROTOCOLS = ("knn", "linear", "finetune", "retrieval")


def _check_workers(num_workers: int) -> None:
    if num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {num_workers}")


def load_pretrained(checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[ContrastiveModel, dict[str, Any], PretrainConfig]:
    """Rebuild the model of a checkpoint and load its weights strictly.

    Returns:
        (model in eval mode, meta dict, the run's config).
    """
    state = load_checkpoint(checkpoint)
    cfg = PretrainConfig.from_dict(state["config"])
    meta = state.get("meta", {})
    model = build_run_model(cfg, len(meta.get("classes", [])), int(meta.get("image_size", 32)))
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {checkpoint} does not match its own config's model: {exc}") from exc
    return model.to(device).eval(), meta, cfg


def evaluation_data(data: str, meta: dict, data_root: str = "~/.cache/contrastkit/datasets", seed: int = 0,
                    num_workers: int = 2) -> dict[str, Any]:
    """Train and test splits of ``data`` decoded at the checkpoint's input size, as EvalDatasets."""
    splits = load_dataset(data, root=data_root, seed=seed)
    if not splits.labelled or splits.test is None:
        raise ValueError(f"evaluation needs labelled train and test splits; {data} has none")
    size = int(meta.get("image_size", 32))
    key = None if data == "digits" else os.path.abspath(os.path.expanduser(data))
    tr = decode_to_array(splits.train, size, num_workers=num_workers, cache_key=key and key + "/train")
    te = decode_to_array(splits.test, size, num_workers=num_workers, cache_key=key and key + "/test")
    mean, std = meta.get("mean", (0.5,) * 3), meta.get("std", (0.5,) * 3)
    return {
        "splits": splits,
        "train": EvalDataset(*tr, mean=mean, std=std),
        "test": EvalDataset(*te, mean=mean, std=std),
        "train_labels": tr[1], "test_labels": te[1], "num_classes": splits.num_classes, "image_size": size,
    }


def _features(model, ds, projection: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    from .evaluate import extract_features

    return extract_features(model if projection else model.encoder, ds, batch_size=512, device=device,
                            use_projection=projection, autocast=True)


def run_protocol(protocol: str, model: ContrastiveModel, data: dict[str, Any], *, label_fraction: float = 0.1,
                 from_scratch: bool = False, epochs: int | None = None, projection: bool = False,
                 device: torch.device | str = "cpu", seed: int = 0, cfg: PretrainConfig | None = None,
                 feats: dict | None = None, knn_k: int = 200) -> dict[str, Any]:
    """One protocol on an in-memory model and evaluation data; ``feats`` caches frozen features."""
    from . import evaluate as ev

    device = torch.device(device)
    t0 = time.perf_counter()
    if protocol in ("knn", "linear", "retrieval"):
        if feats is None or "train" not in feats:
            ftr, ltr = _features(model, data["train"], projection, device)
            fte, lte = _features(model, data["test"], projection, device)
            if feats is not None:
                feats.update(train=(ftr, ltr), test=(fte, lte))
        else:
            (ftr, ltr), (fte, lte) = feats["train"], feats["test"]
        if protocol == "knn":
            metrics = ev.knn_accuracy(ftr, ltr, fte, lte, k=knn_k, temperature=0.1)
            recipe = {"k": knn_k, "temperature": 0.1, "similarity": "cosine", "memory": "train split"}
        elif protocol == "linear":
            metrics = ev.linear_eval(ftr, ltr, fte, lte, epochs=epochs or 100, seed=seed, device=device)
            recipe = metrics.pop("recipe", {})
        else:
            metrics = ev.retrieval_metrics(fte, lte, seed=seed)
            recipe = {"queries": "test split, leave-one-out", "similarity": "cosine"}
    elif protocol == "finetune":
        indices = ev.class_balanced_subset(data["train_labels"], label_fraction, seed=seed)
        encoder = model.encoder
        if from_scratch:
            if cfg is None:
                raise ValueError("from_scratch needs the run's config to build a fresh encoder")
            torch.manual_seed(seed)
            encoder = build_run_model(cfg, data["num_classes"], data["image_size"]).encoder
        metrics = ev.finetune(encoder, data["train"], data["test"], indices, data["num_classes"],
                              epochs=epochs or 30, seed=seed, device=device)
        recipe = metrics.pop("recipe", {})
        metrics.pop("indices", None)
        metrics["label_fraction"] = label_fraction
        metrics["from_scratch"] = from_scratch
        metrics["_indices"] = indices.tolist()
    else:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)} or all")
    return {"protocol": protocol, "metrics": metrics, "recipe": recipe,
            "wall_time_s": round(time.perf_counter() - t0, 2)}


def evaluate_checkpoint(checkpoint: str | os.PathLike, protocol: str = "knn", *, data: str | None = None,
                        data_root: str = "~/.cache/contrastkit/datasets", label_fraction: float = 0.1,
                        from_scratch: bool = False, epochs: int | None = None, projection: bool = False,
                        device: str = "auto", seed: int = 0, num_workers: int = 2,
                        linear_epochs: int | None = None, finetune_epochs: int | None = None,
                        malloc: str = "auto") -> dict[str, Any]:
    """Run an evaluation protocol (or ``all``) on a checkpoint; writes JSON (and markdown for ``all``).

    ``malloc="auto"`` tunes glibc malloc on CPU runs as ``pretrain`` does (:mod:`contrastkit.allocator`); ``"off"``
    leaves it alone.
    """
    if protocol != "all" and protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)} or all")
    if not 0 < label_fraction <= 1:
        raise ValueError(f"--label-fraction must be in (0, 1], got {label_fraction}")
    for flag, value in (("--epochs", epochs), ("--linear-epochs", linear_epochs),
                        ("--finetune-epochs", finetune_epochs)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1 (or left out for the protocol's), got {value}")
    per_protocol = {"linear": linear_epochs or epochs, "finetune": finetune_epochs or epochs}
    _check_workers(num_workers)
    dev = resolve_device(device)
    tune_malloc_for(dev, malloc)
    model, meta, cfg = load_pretrained(checkpoint, dev)
    data_name = data or meta.get("data") or cfg.data
    evdata = evaluation_data(data_name, meta, data_root, seed=cfg.seed, num_workers=num_workers)
    ckpt_dir = Path(checkpoint).parent
    suffix = "" if data_name == cfg.data else "_" + Path(os.path.expanduser(data_name)).name
    feats: dict = {}
    protocols = PROTOCOLS if protocol == "all" else (protocol,)
    results = {}
    for name in protocols:
        res = run_protocol(name, model, evdata, label_fraction=label_fraction, from_scratch=from_scratch,
                           epochs=per_protocol.get(name, epochs), projection=projection, device=dev, seed=seed,
                           cfg=cfg, feats=feats)
        res.update(checkpoint=str(checkpoint), data=data_name, transfer=data_name != cfg.data,
                   pretrained_on=cfg.data, method=cfg.method, what="z" if projection else "h")
        tag = name
        if name == "finetune":
            tag = f"finetune_{label_fraction:g}" + ("_scratch" if from_scratch else "")
            idx_file = ckpt_dir / f"eval_{tag}{suffix}_indices.json"
            idx_file.write_text(json.dumps(res["metrics"].pop("_indices")))
            res["indices_file"] = str(idx_file)
        (ckpt_dir / f"eval_{tag}{suffix}.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
        results[name] = res
    if protocol != "all":
        return results[protocol]
    from .evaluate import format_table

    row = {}
    for name, res in results.items():
        for key, value in res["metrics"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("n_train",):
                row[f"{name}/{key}"] = value
    table = format_table({f"{cfg.method} ({Path(str(checkpoint)).parent.name})": row})
    (ckpt_dir / f"eval_all{suffix}.md").write_text(table + "\n")
    combined = {"protocol": "all", "checkpoint": str(checkpoint), "data": data_name, "results": results}
    (ckpt_dir / f"eval_all{suffix}.json").write_text(json.dumps(combined, indent=2, default=float) + "\n")
    print(table)
    return combined


def embed_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, data: str | None = None,
                     data_root: str = "~/.cache/contrastkit/datasets", split: str | None = None,
                     projection: bool = False, device: str = "auto", num_workers: int = 2,
                     progress: bool = True) -> dict[str, Any]:
    """Export h (or z) of every image of a split with its path, label and class name (npy + csv + json); see
    :func:`contrastkit.search.embed_to_files` (labelled or unlabelled data, streaming, resumable)."""
    from .search import embed_to_files

    return embed_to_files(checkpoint, out, data=data, data_root=data_root, split=split, projection=projection,
                          device=device, num_workers=num_workers, progress=progress)


def preview_augment(data: str, out: str | os.PathLike, *, data_root: str = "~/.cache/contrastkit/datasets",
                    preset: str = "auto", n_images: int = 6, n_views: int = 4, seed: int = 0) -> Path:
    """Save a PNG grid: each row an image and ``n_views`` augmented views of it."""
    from .augment import PRESETS, SimCLRTransform, save_preview

    if n_images < 1 or n_views < 1:
        raise ValueError(f"--images and --views must be >= 1, got {n_images} and {n_views}")
    splits = load_dataset(data, root=data_root, seed=seed)
    if preset == "auto":
        preset = "cifar" if splits.image_size is not None and splits.image_size <= 64 else "imagenet"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(sorted(PRESETS))}")
    n = min(n_images, len(splits.train))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(splits.train), generator=g)[:n].tolist()
    images = [splits.train[i][0] for i in idx]
    torch.manual_seed(seed)
    transform = SimCLRTransform.from_preset(preset)
    save_preview(images, transform, out, n_views=n_views)
    return Path(out)
