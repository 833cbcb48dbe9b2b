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
from .data import EvalDataset, array_cache_key, decode_to_array, load_dataset, resolve_data
from .device import resolve_device
from .finetuned import head_prefix_of, is_finetuned, load_finetuned
from .model import ContrastiveModel
from .eval_options import EVAL_PROTOCOLS, EXTRA_PROTOCOLS as EVAL_EXTRA, check_eval_options
from .train.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from .train.setup import build_run_model, check_output_dir, preset_for
from .tracking import log_evaluation

__all__ = ["load_pretrained", "evaluate_checkpoint", "embed_checkpoint", "preview_augment", "PROTOCOLS",
           "evaluation_data"]

#: the protocols of ``all``, and those run only when named (``classifier``)
PROTOCOLS, EXTRA_PROTOCOLS = EVAL_PROTOCOLS, EVAL_EXTRA


def _check_workers(num_workers: int) -> None:
    if num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {num_workers}")


def load_pretrained(checkpoint: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[ContrastiveModel, dict[str, Any], PretrainConfig]:
    """Rebuild the model of a checkpoint (a ``last.pt``, or the run folder holding it) and load its weights strictly.

    A fine-tuned checkpoint (:mod:`contrastkit.finetuned`) gives its
    :class:`~contrastkit.finetuned.FineTunedNetwork` (also with ``.encoder``), and ``meta["finetuned"]``
    holds its classifier and result.

    Returns:
        (model in eval mode, meta dict, the run's config).
    """
    state = load_checkpoint(checkpoint)
    cfg = PretrainConfig.from_dict(state["config"])
    meta = state.get("meta", {})
    if is_finetuned(state):  # a fine-tuned network: .encoder is f, .head its head prefix
        model, info = load_finetuned(checkpoint)
        return model.to(device).eval(), {**meta, "finetuned": info}, cfg
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
    tr = decode_to_array(splits.train, size, num_workers=num_workers, cache_key=array_cache_key(data, "train"))
    te = decode_to_array(splits.test, size, num_workers=num_workers, cache_key=array_cache_key(data, "test"))
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
                 feats: dict | None = None, knn_k: int = 200, from_head_layer: int = 0,
                 keep_model: bool = False) -> dict[str, Any]:
    """One protocol on an in-memory model and evaluation data; ``feats`` caches frozen features.

    ``finetune`` starts from layer ``from_head_layer`` of the head (0: h); with ``keep_model`` its result holds
    the fine-tuned :class:`~contrastkit.finetuned.FineTunedNetwork` under ``"model"``. ``classifier`` scores
    the model's own classifier (a fine-tuned network) on the test split.
    """
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
        source = model  # the whole model: fine-tuning from a head layer takes the head's first blocks too
        if from_scratch:
            if cfg is None:
                raise ValueError("from_scratch needs the run's config to build a fresh encoder")
            torch.manual_seed(seed)
            source = build_run_model(cfg, data["num_classes"], data["image_size"])
        metrics = ev.finetune(source, data["train"], data["test"], indices, data["num_classes"],
                              epochs=epochs or 30, seed=seed, device=device, head_layer=from_head_layer,
                              return_model=keep_model)
        recipe = metrics.pop("recipe", {})
        metrics.pop("indices", None)
        metrics["label_fraction"] = label_fraction
        metrics["from_scratch"] = from_scratch
        metrics["from_head_layer"] = from_head_layer
        metrics["_indices"] = indices.tolist()
    elif protocol == "classifier":
        metrics, recipe = _classifier_scores(model, data, device)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS + EXTRA_PROTOCOLS)} or all")
    result = {"protocol": protocol, "metrics": metrics, "recipe": recipe,
              "wall_time_s": round(time.perf_counter() - t0, 2)}
    if "model" in metrics:
        result["model"] = metrics.pop("model")
    return result


def _classifier_scores(model, data: dict[str, Any], device) -> tuple[dict[str, Any], dict[str, Any]]:
    """Top-1 / top-5 of a fine-tuned network's own classifier on the test split."""
    from .evaluate.classify import classifier_accuracy
    from .finetuned import FineTunedNetwork

    if not isinstance(model, FineTunedNetwork):
        raise ValueError("--protocol classifier scores the classifier of a fine-tuned checkpoint (written by "
                         "'eval --protocol finetune --save' or by 'distill'); this is a pretraining checkpoint")
    if model.num_classes != data["num_classes"]:
        raise ValueError(f"the checkpoint's classifier has {model.num_classes} classes but the data have "
                         f"{data['num_classes']}")
    # the batch size of finetune()'s own scoring (eval_batch_size), so a reloaded network scores identically
    metrics = classifier_accuracy(model, data["test"], model.num_classes, batch_size=256, device=device)
    return metrics, {"what": "the checkpoint's own classifier, test split, no augmentation",
                     "from_head_layer": model.from_head_layer}


def save_finetuned_result(path, res: dict[str, Any], cfg: PretrainConfig, meta: dict[str, Any], evdata: dict[str, Any],
                    checkpoint, data_name: str, seed: int) -> str:
    """Write the fine-tuned network of a finetune result as a checkpoint (:mod:`contrastkit.finetuned`)."""
    from .finetuned import save_finetuned

    m = res["metrics"]
    result = {"kind": "finetune", "top1": m["top1"], "top5": m["top5"], "data": data_name,
              "label_fraction": m["label_fraction"], "from_scratch": m["from_scratch"],
              "from_head_layer": m["from_head_layer"], "seed": seed, "n_train": m["n_train"],
              "indices": list(m["_indices"]), "recipe": res["recipe"], "source_checkpoint": str(checkpoint)}
    meta = {k: v for k, v in meta.items() if k != "finetuned"}
    return str(save_finetuned(path, res["model"], cfg.to_dict(), {**meta, "data": data_name},
                              list(evdata["splits"].classes), result))


def evaluate_checkpoint(checkpoint: str | os.PathLike, protocol: str = "knn", *, data: str | None = None,
                        data_root: str = "~/.cache/contrastkit/datasets", label_fraction: float | None = None,
                        from_scratch: bool = False, projection: bool = False,
                        device: str = "auto", seed: int = 0, num_workers: int = 2,
                        linear_epochs: int | None = None, finetune_epochs: int | None = None,
                        malloc: str = "auto", from_head_layer: int = 0,
                        save: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run an evaluation protocol (or ``all``) on a checkpoint; writes JSON (and markdown for ``all``).

    ``checkpoint`` is a ``last.pt`` or the run folder holding it. ``label_fraction`` (default 0.1),
    ``from_scratch``, ``finetune_epochs`` (default 30), ``from_head_layer`` and ``save`` are finetune's,
    ``linear_epochs`` (default 100) the linear probe's, ``projection`` that of the frozen-feature protocols; one given
    to a protocol that does not use it raises (:func:`contrastkit.eval_options.check_eval_options`).

    ``finetune`` starts from layer ``from_head_layer`` of the head (0: h; SimCLRv2: 1 of a 3-layer head), and
    with ``save`` writes the fine-tuned network as a checkpoint (:mod:`contrastkit.finetuned`) that ``eval``,
    ``embed`` and ``distill`` load. ``classifier`` scores a fine-tuned checkpoint's own classifier.

    ``malloc="auto"`` tunes glibc malloc on CPU runs as ``pretrain`` does (:mod:`contrastkit.allocator`); ``"off"``
    leaves it alone.
    """
    check_eval_options(protocol, label_fraction=label_fraction, from_scratch=from_scratch,
                       linear_epochs=linear_epochs, finetune_epochs=finetune_epochs, projection=projection,
                       from_head_layer=from_head_layer or None, save=save)
    label_fraction = 0.1 if label_fraction is None else label_fraction
    per_protocol = {"linear": linear_epochs, "finetune": finetune_epochs}
    _check_workers(num_workers)
    dev = resolve_device(device, "--device")
    tune_malloc_for(dev, malloc)
    checkpoint = resolve_checkpoint(checkpoint)
    model, meta, cfg = load_pretrained(checkpoint, dev)
    if from_head_layer:
        head_prefix_of(model, from_head_layer, 0)  # out of range: refused before the data are read
    if save is not None:
        check_output_dir(Path(save).expanduser().parent)
    cfg.data = resolve_data(cfg.data)  # a checkpoint of an older version holds --data as typed
    data_name = resolve_data(data or meta.get("data") or cfg.data)
    evdata = evaluation_data(data_name, meta, data_root, seed=cfg.seed, num_workers=num_workers)
    ckpt_dir = Path(checkpoint).parent
    suffix = "" if data_name == cfg.data else "_" + Path(os.path.expanduser(data_name)).name
    feats: dict = {}
    protocols = PROTOCOLS if protocol == "all" else (protocol,)
    results, written = {}, {}
    for name in protocols:
        res = run_protocol(name, model, evdata, label_fraction=label_fraction, from_scratch=from_scratch,
                           epochs=per_protocol.get(name), projection=projection, device=dev, seed=seed,
                           cfg=cfg, feats=feats, from_head_layer=from_head_layer, keep_model=save is not None)
        if save is not None:
            res["saved"] = save_finetuned_result(save, res, cfg, meta, evdata, checkpoint, data_name, seed)
            del res["model"]
        res.update(checkpoint=str(checkpoint), data=data_name, transfer=data_name != cfg.data,
                   pretrained_on=cfg.data, method=cfg.method, what="z" if projection else "h")
        tag = name
        if name == "finetune":
            tag = f"finetune_{label_fraction:g}" + ("_scratch" if from_scratch else "") + \
                (f"_layer{from_head_layer}" if from_head_layer else "")
            idx_file = ckpt_dir / f"eval_{tag}{suffix}_indices.json"
            idx_file.write_text(json.dumps(res["metrics"].pop("_indices")))
            res["indices_file"] = str(idx_file)
        out_file = ckpt_dir / f"eval_{tag}{suffix}.json"
        out_file.write_text(json.dumps(res, indent=2, default=float) + "\n")
        results[name], written[tag + suffix] = res, (res, out_file)
    saved = load_checkpoint(checkpoint)  # --tracking: the results join the checkpoint's tracked runs, if any
    log_evaluation(saved.get("tracking"), int(saved.get("global_step", 0)), written)
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
                    preset: str = "auto", n_images: int = 6, n_views: int = 4, seed: int = 0,
                    skip_bad_files: bool = False) -> Path:
    """Save an image grid (the format of ``out``'s extension: .png, .jpg, .jpeg or .webp): each row an image and
    ``n_views`` augmented views of it. ``skip_bad_files`` passes over unreadable images."""
    from .augment import SimCLRTransform, save_preview
    from .augment.preview import preview_format

    if n_images < 1 or n_views < 1:
        raise ValueError(f"--images and --views must be >= 1, got {n_images} and {n_views}")
    try:
        preview_format(out)
    except ValueError as exc:
        raise ValueError(f"--out: {exc}") from exc
    splits = load_dataset(data, root=data_root, seed=seed, skip_bad_files=skip_bad_files)
    preset = preset_for(preset, splits.image_size)
    n = min(n_images, len(splits.train))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(splits.train), generator=g)[:n].tolist()
    images = [splits.train[i][0] for i in idx]
    torch.manual_seed(seed)
    transform = SimCLRTransform.from_preset(preset)
    save_preview(images, transform, out, n_views=n_views)
    return Path(out)
