"""Evaluation of a checkpoint: the protocols behind ``contrastkit eval``.

Each protocol returns a dict and writes it as JSON beside the checkpoint
(``eval_<protocol>[_<data>].json``). Evaluating on another data set than the
checkpoint's is transfer: images are resized to the checkpoint's input size and
normalised with its statistics. An export (``contrastkit export``) is scored by the
frozen-feature protocols through :func:`contrastkit.load_encoder` (:mod:`.exported`).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..data import class_balanced_subset, resolve_data
from ..export.filekinds import export_kind
from ..models import (CHECKPOINT_SUFFIXES, CheckpointMeta, FineTunedNetwork, build_model, head_prefix_of,
                      load_checkpoint_model, resolve_checkpoint, save_finetuned)
from ..runtime import resolve_device, tune_malloc_for
from ..runtime.ownership import OutputFiles
from ..tracking import log_evaluation
from .classify import classifier_accuracy
from .exported import evaluate_export
from .features import extract_features
from .fine_tune import finetune
from .frozen import FROZEN_PROTOCOLS, evaluation_data, score_features
from .label_sets import label_set_data, score_label_sets
from .options import EXTRA_PROTOCOLS, PROTOCOLS, check_eval_options
from .report import format_table
from .results import ResultFiles

__all__ = ["evaluate_checkpoint", "run_protocol", "evaluation_data", "save_finetuned_result", "PROTOCOLS"]


def _check_workers(num_workers: int) -> None:
    if num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {num_workers}")


def _device(device: str, malloc: str, num_workers: int) -> torch.device:
    """The evaluation's device (``--device``), with glibc malloc tuned for it (``--malloc``); checks the workers."""
    _check_workers(num_workers)
    dev = resolve_device(device, "--device")
    tune_malloc_for(dev, malloc)
    return dev


def _data_names(meta: CheckpointMeta, data: str | None) -> tuple[str, str, str]:
    """``(trained_on, evaluated_on, suffix)``: the checkpoint's data, the data evaluated (``data``, default the
    checkpoint's), and the result files' suffix (``_<name>`` for transfer to other data, else empty)."""
    trained_on = resolve_data(meta.data)  # a checkpoint of an older version holds --data as typed
    data_name = resolve_data(data or meta.data)
    return trained_on, data_name, "" if data_name == trained_on else "_" + Path(os.path.expanduser(data_name)).name


def _features(model, ds, projection: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    return extract_features(model if projection else model.encoder, ds, batch_size=512, device=device,
                            use_projection=projection, autocast=True)


def run_protocol(protocol: str, model: torch.nn.Module, data: dict[str, Any], *, label_fraction: float = 0.1,
                 from_scratch: bool = False, epochs: int | None = None, projection: bool = False,
                 device: torch.device | str = "cpu", seed: int = 0, cfg: Any = None,
                 feats: dict | None = None, knn_k: int = 200, from_head_layer: int = 0,
                 keep_model: bool = False) -> dict[str, Any]:
    """One protocol on an in-memory model and evaluation data; ``feats`` caches frozen features.

    ``finetune`` starts from layer ``from_head_layer`` of the head (0: h); with ``keep_model`` its result holds
    the fine-tuned :class:`~contrastkit.models.FineTunedNetwork` under ``"model"``. ``classifier`` scores
    the model's own classifier (a fine-tuned network) on the test split. ``cfg`` (the run's options) gives the
    architecture of ``finetune --from-scratch``'s fresh encoder.
    """
    device = torch.device(device)
    t0 = time.perf_counter()
    if protocol in FROZEN_PROTOCOLS:
        if feats is None or "train" not in feats:
            ftr, ltr = _features(model, data["train"], projection, device)
            fte, lte = _features(model, data["test"], projection, device)
            if feats is not None:
                feats.update(train=(ftr, ltr), test=(fte, lte))
        else:
            (ftr, ltr), (fte, lte) = feats["train"], feats["test"]
        metrics, recipe = score_features(protocol, (ftr, ltr), (fte, lte), epochs=epochs, seed=seed, device=device,
                                         knn_k=knn_k)
    elif protocol == "finetune":
        indices = class_balanced_subset(data["train_labels"], label_fraction, seed=seed)
        source = model  # the whole model: fine-tuning from a head layer takes the head's first blocks too
        if from_scratch:
            if cfg is None:
                raise ValueError("from_scratch needs the run's config to build a fresh encoder")
            torch.manual_seed(seed)
            source = build_model(cfg, None, data["image_size"])
        metrics = finetune(source, data["train"], data["test"], indices, data["num_classes"],
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


def save_finetuned_result(path, res: dict[str, Any], meta: CheckpointMeta, evdata: dict[str, Any], checkpoint,
                          data_name: str, seed: int) -> str:
    """Write the fine-tuned network of a finetune result as a checkpoint (:mod:`contrastkit.models.finetuned`)."""
    m = res["metrics"]
    result = {"kind": "finetune", "top1": m["top1"], "top5": m["top5"], "data": data_name,
              "label_fraction": m["label_fraction"], "from_scratch": m["from_scratch"],
              "from_head_layer": m["from_head_layer"], "seed": seed, "n_train": m["n_train"],
              "indices": list(m["_indices"]), "recipe": res["recipe"], "source_checkpoint": str(checkpoint)}
    return str(save_finetuned(path, res["model"], meta.config, {**meta.as_dict(), "data": data_name},
                              list(evdata["splits"].classes), result))


def _label_set_result(model, meta: CheckpointMeta, config: dict[str, Any], labels: str, data_name: str,
                      data_root: str, num_workers: int, projection: bool, device, seed: int) -> dict[str, Any]:
    """``retrieval --labels``: the folder of multi-labelled images ``data_name`` with its label-set CSV
    ``labels``, read as the checkpoint was trained, scored; the result shaped as :func:`run_protocol`'s."""
    data_sets = label_set_data(data_name, labels, meta.image_size, meta.mean, meta.std, data_root,
                               seed=config.get("seed", 0), num_workers=num_workers)
    t0 = time.perf_counter()
    metrics, recipe = score_label_sets(model if projection else model.encoder, data_sets, use_projection=projection,
                                       device=device, seed=seed)
    return {"protocol": "retrieval", "metrics": metrics, "recipe": recipe,
            "wall_time_s": round(time.perf_counter() - t0, 2)}


def _tag(name: str, label_fraction: float, from_scratch: bool, from_head_layer: int,
         labels: str | os.PathLike | None = None) -> str:
    """The file tag of a protocol's result: ``knn``, ``finetune_0.1_scratch_layer1``, ``retrieval_<labels file>``"""
    if name == "retrieval" and labels is not None:
        return f"retrieval_{Path(labels).stem}"
    if name != "finetune":
        return name
    return (f"finetune_{label_fraction:g}" + ("_scratch" if from_scratch else "")
            + (f"_layer{from_head_layer}" if from_head_layer else ""))


def _write_result(res: dict[str, Any], files: ResultFiles, tag: str, suffix: str) -> Path | None:
    """``eval_<tag><suffix>.json`` (and a fine-tuning run's subset, ``..._indices.json``) in the results folder;
    returns its path (None when the results are printed only)."""
    if "_indices" in res["metrics"]:
        indices = res["metrics"].pop("_indices")
        written = files.write(f"eval_{tag}{suffix}_indices.json", json.dumps(indices))
        if written is not None:
            res["indices_file"] = str(written)
    return files.write_json(f"eval_{tag}{suffix}.json", res)


def _save_model(target: OutputFiles, res: dict[str, Any], meta, evdata, checkpoint: Path, data_name: str,
                seed: int) -> None:
    """``--save``: the fine-tuned network written beside its name, then published; ``res`` names the file."""
    temp = target.temp(target.names[0])
    save_finetuned_result(temp, res, meta, evdata, checkpoint, data_name, seed)
    target.publish()
    res["saved"] = str(target.folder / target.names[0])
    del res["model"]


def _write_all(results: dict[str, Any], meta: CheckpointMeta, checkpoint: Path, data_name: str, suffix: str,
               files: ResultFiles) -> dict[str, Any]:
    """``--protocol all``: a markdown table of every number and the combined JSON, in the results folder."""
    row = {}
    for name, res in results.items():
        for key, value in res["metrics"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("n_train",):
                row[f"{name}/{key}"] = value
    table = format_table({f"{meta.method} ({checkpoint.parent.name})": row})
    print(table)
    files.write(f"eval_all{suffix}.md", table + "\n")
    combined = {"protocol": "all", "checkpoint": str(checkpoint), "data": data_name, "results": results}
    files.write_json(f"eval_all{suffix}.json", combined)
    return combined


def _result_names(names: tuple[str, ...], tags: dict[str, str], suffix: str) -> list[str]:
    """The files the protocols ``names`` write (checked before any work)."""
    out = [f"eval_{tags[n]}{suffix}.json" for n in names]
    out += [f"eval_{tags[n]}{suffix}_indices.json" for n in names if n == "finetune"]
    return out + ([f"eval_all{suffix}.md", f"eval_all{suffix}.json"] if len(names) > 1 else [])


def _save_target(save: str | os.PathLike | None, overwrite: bool) -> OutputFiles | None:
    """``--save``: the fine-tuned checkpoint's file, checked before any work (named ``*.pt``; a new file, or one an
    earlier ``--save`` wrote with ``overwrite``; never a run's checkpoint)."""
    if save is None:
        return None
    path = Path(save).expanduser()
    if path.suffix not in CHECKPOINT_SUFFIXES and not path.is_dir():
        raise ValueError(f"--save {path}: a fine-tuned checkpoint is a *.pt file (contrastkit reads checkpoints by "
                         f"name), for example --save {path.with_suffix('.pt')}")
    if path.is_dir():
        raise ValueError(f"--save {path} is a folder; expected the path of the checkpoint file to write, for "
                         f"example --save {path / 'finetuned.pt'}")
    return OutputFiles(path.parent, [path.name], "eval", "results", overwrite, flag="--save",
                       scratch=[f".{path.name}.tmp.tmp"])


def evaluate_checkpoint(checkpoint: str | os.PathLike, protocol: str = "knn", *, data: str | None = None,
                        data_root: str = "~/.cache/contrastkit/datasets", label_fraction: float | None = None,
                        from_scratch: bool = False, projection: bool = False,
                        device: str = "auto", seed: int = 0, num_workers: int = 2,
                        linear_epochs: int | None = None, finetune_epochs: int | None = None,
                        malloc: str = "auto", from_head_layer: int = 0,
                        save: str | os.PathLike | None = None, results_dir: str | os.PathLike | None = None,
                        overwrite: bool = False, labels: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run an evaluation protocol (or ``all``) on a checkpoint; writes JSON (and markdown for ``all``).

    ``checkpoint`` is a ``last.pt`` or the run folder holding it, or an export written by ``contrastkit export``
    (scored by ``knn``, ``linear`` or ``retrieval`` through :func:`contrastkit.load_encoder`: :mod:`.exported`).
    ``label_fraction`` (default 0.1), ``from_scratch``, ``finetune_epochs`` (default 30), ``from_head_layer`` and
    ``save`` are finetune's, ``linear_epochs`` (default 100) the linear probe's, ``projection`` that of the
    frozen-feature protocols; one given to a protocol that does not use it raises
    (:func:`contrastkit.evaluate.options.check_eval_options`).

    ``finetune`` starts from layer ``from_head_layer`` of the head (0: h; SimCLRv2: 1 of a 3-layer head), and
    with ``save`` writes the fine-tuned network as a checkpoint (:mod:`contrastkit.models.finetuned`) that
    ``eval``, ``embed`` and ``distill`` load; an existing ``save`` is replaced only when an earlier ``--save``
    wrote it and ``overwrite`` is set (a run's checkpoint never is). ``classifier`` scores a fine-tuned
    checkpoint's own classifier.

    The results go beside the checkpoint, or to ``results_dir`` (:class:`~contrastkit.evaluate.results.
    ResultFiles`); a read-only checkpoint folder without ``results_dir`` returns (and the CLI prints) them only.
    Everything that can refuse to write does so before any work.

    ``malloc="auto"`` tunes glibc malloc on CPU runs as ``pretrain`` does (:mod:`contrastkit.runtime.allocator`).
    ``labels`` (a CSV of label sets, with ``retrieval``) scores retrieval over a folder of multi-labelled images
    (:mod:`.label_sets`).
    """
    check_eval_options(protocol, label_fraction=label_fraction, from_scratch=from_scratch,
                       linear_epochs=linear_epochs, finetune_epochs=finetune_epochs, projection=projection,
                       from_head_layer=from_head_layer or None, save=save, labels=labels)
    kind = export_kind(Path(checkpoint).expanduser())
    if kind is not None:  # the encoder alone: the frozen-feature protocols, through load_encoder
        return evaluate_export(checkpoint, kind, protocol, data=data, data_root=data_root, projection=projection,
                               device=device, seed=seed, num_workers=num_workers, linear_epochs=linear_epochs,
                               malloc=malloc, results_dir=results_dir, labels=labels)
    label_fraction = 0.1 if label_fraction is None else label_fraction
    dev = _device(device, malloc, num_workers)
    checkpoint = resolve_checkpoint(checkpoint)
    model, meta, config = load_checkpoint_model(checkpoint, dev)
    if from_head_layer:
        head_prefix_of(model, from_head_layer, 0)  # out of range: refused before the data are read
    trained_on, data_name, suffix = _data_names(meta, data)
    names = PROTOCOLS if protocol == "all" else (protocol,)
    tags = {n: _tag(n, label_fraction, from_scratch, from_head_layer, labels) for n in names}
    files = ResultFiles(checkpoint, results_dir)
    files.check(_result_names(names, tags, suffix))
    origin = dict(checkpoint=str(checkpoint), data=data_name, transfer=data_name != trained_on,
                  pretrained_on=trained_on, method=meta.method, what="z" if projection else "h")
    if labels is not None:  # a folder of multi-labelled images: retrieval against its label sets
        res = {**_label_set_result(model, meta, config, str(labels), data_name, data_root, num_workers, projection,
                                   dev, seed), **origin}
        log_evaluation(meta.tracking, meta.global_step or 0,
                       {tags["retrieval"] + suffix: (res, _write_result(res, files, tags["retrieval"], suffix))})
        return res
    with contextlib.ExitStack() as stack:
        target = _save_target(save, overwrite)
        if target is not None:
            stack.enter_context(target)
        evdata = evaluation_data(data_name, meta.image_size, meta.mean, meta.std, data_root,
                                 seed=config.get("seed", 0), num_workers=num_workers)
        feats: dict = {}  # frozen features, shared by the protocols that use them
        results, written = {}, {}
        for name in names:
            res = run_protocol(name, model, evdata, label_fraction=label_fraction, from_scratch=from_scratch,
                               epochs={"linear": linear_epochs, "finetune": finetune_epochs}.get(name),
                               projection=projection, device=dev, seed=seed, cfg=config, feats=feats,
                               from_head_layer=from_head_layer, keep_model=target is not None)
            if target is not None:
                _save_model(target, res, meta, evdata, checkpoint, data_name, seed)
            res.update(origin)
            written[tags[name] + suffix] = (res, _write_result(res, files, tags[name], suffix))
            results[name] = res
    log_evaluation(meta.tracking, meta.global_step or 0, written)  # --tracking: joins the checkpoint's runs
    if protocol != "all":
        return results[protocol]
    return _write_all(results, meta, checkpoint, data_name, suffix, files)
