"""``contrastkit eval`` on an export: the frozen-feature protocols on the encoder that ``contrastkit export`` wrote.

An export (torchvision / timm state_dict with its sidecar, safetensors, TorchScript, ONNX, ``pt2``, hub folder) holds
the encoder f and how its input is prepared, nothing else: :func:`~contrastkit.export.load_encoder` reads it, and
the protocols that need only h, ``knn``, ``linear`` and ``retrieval``, score it exactly as they score the checkpoint
it came from (the same decoded images at the export's input size and normalisation, the same seeds). The
protocols that need more, ``finetune`` (the trained network to start from) and ``classifier`` (a fine-tuned
classifier), are refused in one line naming what to give instead.

Results go beside the export (or to ``--results-dir``) as ``eval_<protocol>[_<data>]_<export name>.json``, so that
they never take the name of the checkpoint's own results.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..data import resolve_data
from ..export import load_encoder_and_metadata
from ..runtime import resolve_device, tune_malloc_for
from .features import extract_features
from .frozen import FROZEN_PROTOCOLS, evaluation_data, score_features
from .label_sets import label_set_data, score_label_sets
from .results import ResultFiles

__all__ = ["EXPORT_PROTOCOLS", "evaluate_export", "check_export_protocol"]

#: the protocols an export can be scored by: they need only the encoder f and its input preparation
EXPORT_PROTOCOLS = FROZEN_PROTOCOLS


def check_export_protocol(path: Path, kind: str, protocol: str, projection: bool) -> None:
    """An export is scored by :data:`EXPORT_PROTOCOLS`, on h.

    Raises:
        ValueError: another protocol, or ``projection``; the message names what works.
    """
    what = f"{path} is an export ({kind}), the encoder f alone"
    if protocol not in EXPORT_PROTOCOLS:
        needs = {"finetune": "fine-tunes the trained network", "classifier": "scores a fine-tuned classifier",
                 "all": "includes finetune"}[protocol]
        raise ValueError(f"{what}: eval scores it with --protocol {', '.join(EXPORT_PROTOCOLS[:-1])} or "
                         f"{EXPORT_PROTOCOLS[-1]}; --protocol {protocol} {needs}: give the checkpoint it was "
                         f"exported from (a run folder or its last.pt)")
    if projection:
        raise ValueError(f"{what}: it gives h, not z = g(h); leave --projection out, or give the checkpoint it "
                         f"was exported from")


def _frozen_scores(encoder, protocol: str, data_name: str, meta: dict[str, Any], data_root: str, num_workers: int,
                   linear_epochs: int | None, dev, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A frozen-feature protocol on the features of the data's train and test splits."""
    evdata = evaluation_data(data_name, meta["input_size"][1], meta["mean"], meta["std"], data_root,
                             num_workers=num_workers)
    train, test = (extract_features(encoder, evdata[split], batch_size=512, device=dev, autocast=True)
                   for split in ("train", "test"))
    return score_features(protocol, train, test, epochs=linear_epochs, seed=seed, device=dev)


def evaluate_export(path: str | os.PathLike, kind: str, protocol: str, *, data: str | None = None,
                    data_root: str = "~/.cache/contrastkit/datasets", projection: bool = False,
                    device: str = "auto", seed: int = 0, num_workers: int = 2, linear_epochs: int | None = None,
                    malloc: str = "auto", results_dir: str | os.PathLike | None = None,
                    labels: str | os.PathLike | None = None) -> dict[str, Any]:
    """Score an export (``kind``, from :func:`~contrastkit.export.filekinds.export_kind`) by a frozen-feature
    protocol; writes ``eval_<protocol>[_<data>]_<export name>.json`` beside it (or in ``results_dir``).

    ``data`` defaults to the data the export's metadata names. An ONNX export runs on the CPU (onnxruntime):
    ``device="auto"`` means the CPU for it. ``labels`` (a CSV of label sets, with ``retrieval``) scores retrieval
    over a folder of multi-labelled images (:mod:`.label_sets`).

    Raises:
        ValueError: a protocol that needs more than the encoder, ``projection``, no data to evaluate on.
        ExportError: a file that is not what its name says, or a missing optional package (named).
    """
    path = Path(path).expanduser()
    check_export_protocol(path, kind, protocol, projection)
    if num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {num_workers}")
    dev = resolve_device("cpu" if kind == "onnx" and device == "auto" else device, "--device")
    tune_malloc_for(dev, malloc)
    encoder, _, meta = load_encoder_and_metadata(path, dev)
    trained_on = resolve_data(meta["data"]) if meta.get("data") else None
    if data is None and trained_on is None:
        raise ValueError(f"{path} does not say which data it was trained on: give --data")
    data_name = resolve_data(data or trained_on)
    transfer = trained_on is not None and data_name != trained_on
    name = f"{protocol}_{Path(labels).stem}" if labels is not None else protocol
    tag = (f"{name}_{Path(os.path.expanduser(data_name)).name}" if transfer else name) + f"_{path.name}"
    files = ResultFiles(path, results_dir)
    files.check([f"eval_{tag}.json"])
    t0 = time.perf_counter()
    if labels is not None:  # a folder of multi-labelled images: retrieval against its label sets
        sets = label_set_data(data_name, str(labels), meta["input_size"][1], meta["mean"], meta["std"], data_root,
                              num_workers=num_workers)
        metrics, recipe = score_label_sets(encoder, sets, device=dev, seed=seed)
    else:
        metrics, recipe = _frozen_scores(encoder, protocol, data_name, meta, data_root, num_workers, linear_epochs,
                                         dev, seed)
    res = {"protocol": protocol, "metrics": metrics, "recipe": recipe,
           "wall_time_s": round(time.perf_counter() - t0, 2), "checkpoint": str(path), "export_format": kind,
           "data": data_name, "transfer": transfer, "pretrained_on": trained_on, "method": meta.get("method"),
           "what": "h"}
    files.write_json(f"eval_{tag}.json", res)
    return res
