"""The kNN monitor: top-1 accuracy of a kNN classifier on the encoder's features, every ``--knn-every`` epochs
and/or every ``--knn-every-s`` seconds of training (an accuracy-over-time curve).

It uses evaluation's feature extraction and kNN (as torchvision's training loop calls its ``evaluate``). Every
rank decodes the arrays and runs the monitor: no rank works alone while the others wait inside a collective,
where the process group's timeout (``--dist-timeout-s``) would end the run.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ..config import PretrainConfig
from ..data import DataSplits, EvalDataset, array_cache_key, decode_to_array
from ..evaluate.features import extract_features
from ..evaluate.knn import knn_accuracy
from .precision import autocast

__all__ = ["MonitorData", "monitor_data", "knn_monitor", "monitor_due", "timed_monitor_due"]


@dataclass
class MonitorData:
    """Train (memory) and test images decoded once at the training crop size, as (images, labels) pairs, with the
    normalisation."""

    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    mean: tuple
    std: tuple


def monitor_data(cfg: PretrainConfig, splits: DataSplits, size: int, mean, std) -> MonitorData | None:
    """The monitor's arrays, or None when the monitor is off or the data have no labelled test split."""
    if not ((cfg.knn_every > 0 or cfg.knn_every_s > 0) and splits.labelled and splits.test is not None):
        return None
    train = decode_to_array(splits.train, size, num_workers=cfg.num_workers,
                            cache_key=array_cache_key(cfg.data, "train"))
    test = decode_to_array(splits.test, size, num_workers=cfg.num_workers, cache_key=array_cache_key(cfg.data, "test"))
    return MonitorData(train, test, mean, std)


def monitor_due(cfg: PretrainConfig, epoch: int, finished_epoch: bool, stopping: bool) -> bool:
    """Whether the monitor runs after ``epoch``: every ``knn_every`` epochs, after the last one, and at an early
    stop; never after a part of an epoch that the run goes on with."""
    if cfg.knn_every <= 0:  # the timed monitor alone (--knn-every-s)
        return False
    return (finished_epoch or stopping) and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.epochs or stopping)


def timed_monitor_due(cfg: PretrainConfig, before_s: float, after_s: float) -> bool:
    """Whether the step that took the training time from ``before_s`` to ``after_s`` seconds crossed a multiple
    of ``--knn-every-s`` (the monitor then runs; a resumed run goes on from its checkpoint's training time)."""
    every = cfg.knn_every_s
    return every > 0 and int(after_s // every) > int(before_s // every)


def knn_monitor(encoder: nn.Module, data: MonitorData, cfg: PretrainConfig, device: torch.device) -> float:
    """kNN top-1 on the test split with the training split as memory (cosine, ``knn_k``, weighted votes)."""
    # fp32 on CPUs, as evaluation computes features (a bf16 run's monitor gives the figure `eval` would)
    with autocast(device, cfg.precision) if device.type == "cuda" else contextlib.nullcontext():
        ftr, ltr = extract_features(encoder, EvalDataset(*data.train, mean=data.mean, std=data.std), batch_size=512,
                                    device=device)
        fte, lte = extract_features(encoder, EvalDataset(*data.test, mean=data.mean, std=data.std), batch_size=512,
                                    device=device)
    return float(knn_accuracy(ftr.float(), ltr, fte.float(), lte, k=cfg.knn_k,
                              temperature=cfg.knn_temperature)["top1"])
