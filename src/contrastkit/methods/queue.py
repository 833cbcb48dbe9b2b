"""SimCLR and SupCon with a momentum encoder and a memory queue (MoCo, He et al. 2020): many negatives at a small
batch, for one extra forward pass without gradient.

Two methods, one module:

* ``simclr-queue``: each image is its own class; a query's positives are the keys of its image's other views, its
  negatives every other key of the batch and the K queued keys.
* ``supcon-queue``: keys of the query's class, in the batch and in the queue, are positives too (the memory-based
  variant of SupCon's appendix).

The model is a :class:`~contrastkit.models.MomentumModel`: queries from the trained f and g, keys from their momentum
copy, side by side in one forward call (outputs (N, V, 2D)). The objective, :class:`QueueObjective`, computes
:class:`~contrastkit.losses.MomentumContrastLoss` of the queries against the batch's keys plus the queue (more
columns of the tiled kernel; no key takes a gradient), *then* pushes the keys into the queue, gathered from every
rank (:class:`~contrastkit.losses.MemoryQueue`), and moves the momentum copy once (:meth:`MomentumModel.follow`).
The queue is the objective's state, so the checkpoint holds it; the momentum weights are the model's. Gradient
caching runs as for SimCLR: the loop calls the objective once per step, on the outputs of the first (no-graph) pass,
so the keys of that pass go into the queue and the copy moves once.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..losses import MemoryQueue, MomentumContrastLoss
from ..models import MomentumModel, build_model
from .base import DataInfo, Method, MethodParts
from .labels import class_labels, unlabelled

__all__ = ["QueueObjective", "SIMCLR_QUEUE", "SUPCON_QUEUE", "check_queue"]

OPTIONS = ("momentum_encoder", "momentum_ramp", "queue_size")
DEFAULTS = {"momentum_encoder": 0.99, "queue_size": 4096}  # MoCo: 0.999 and 65,536 at batch 256 on 8 GPUs


class QueueObjective(nn.Module):
    """The loss of the queries against the batch's keys plus the queue; then the keys go into the queue.

    Args:
        loss: the contrast of queries with keys.
        queue: the keys of past steps (with class labels when ``use_labels``).
        use_labels: pass the labels (SupCon); False: every image is its own class (SimCLR).
        model: the model whose keys these are; its momentum copy moves after each call. It is held outside the
            module tree (the objective's state, and the checkpoint's ``objective``, is the queue alone).

    Shape:
        outputs (N, V, 2D): queries then keys; labels (N,) -> scalar.
    """

    def __init__(self, loss: MomentumContrastLoss, queue: MemoryQueue, use_labels: bool, model: MomentumModel
                 ) -> None:
        super().__init__()
        self.loss = loss
        self.queue = queue
        self.use_labels = use_labels
        object.__setattr__(self, "_model", model)  # not a submodule (see above)

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        n, v, two_d = outputs.shape
        d = two_d // 2
        queries, keys = outputs[..., :d], outputs[..., d:]  # (N, V, D) each
        y = labels if self.use_labels else None
        memory, memory_labels = self.queue.contents()  # (F, D), (F,) or None
        loss = self.loss(queries, keys, y, memory, memory_labels)
        # after the loss: a key is never contrasted with its own batch
        self.queue.push(keys.detach().reshape(n * v, d), None if y is None else y.repeat_interleave(v, dim=0))
        self._model.follow()  # once per step
        return loss


def _build(cfg: Any, data: DataInfo, labelled: bool) -> MethodParts:
    network = build_model(cfg, None, data.image_size)
    total_steps = cfg.epochs * (len(data.targets) // cfg.batch_size)  # the loop drops short batches
    model = MomentumModel(network, cfg.momentum_encoder, cfg.momentum_ramp, max(1, total_steps))
    # check_values=False and even_batches=True: as for SimCLR (methods/simclr.py), nothing is read back per step
    loss = MomentumContrastLoss(temperature=cfg.temperature, normalize=cfg.l2_normalize, check_values=False,
                                even_batches=True)
    queue = MemoryQueue(cfg.queue_size, model.key_dim, () if labelled else None)
    labels = class_labels("supcon-queue", data) if labelled else unlabelled(data)
    return MethodParts(model=model, objective=QueueObjective(loss, queue, labelled, model), labels=labels)


def check_queue(cfg: Any) -> None:
    """The queue methods' options: m in [0, 1), K >= 1 and a multiple of the keys a step adds, L_out.

    Raises:
        ValueError: naming the option, what it got and what it takes.
    """
    m, k = cfg.momentum_encoder, cfg.queue_size
    if not 0 <= m < 1:
        raise ValueError(f"--momentum-encoder must be in [0, 1) (the key encoder follows f and g by "
                         f"xi <- m xi + (1 - m) theta; 1 would never move), got {m}")
    step = (cfg.batch_size or 1) * cfg.n_views  # an unset batch size is checked once it is chosen to fit the data
    if k < 1 or (cfg.batch_size is not None and k % step):
        below, above = max(step, k // step * step), (k // step + 1) * step
        raise ValueError(f"--queue-size must be a multiple of the keys each step adds, --batch-size x --n-views = "
                         f"{cfg.batch_size} x {cfg.n_views} = {step} (the whole queue is replaced every K / {step} "
                         f"steps), got {k}; e.g. {below} or {above}")
    if cfg.loss != "ntxent":
        raise ValueError(f"--loss {cfg.loss} applies to --method simclr; --method {cfg.method} contrasts queries "
                         f"with keys (NT-Xent, or SupCon's L_out with labels)")
    if cfg.supcon_variant != "out":
        raise ValueError(f"--method {cfg.method} uses SupCon's L_out over the batch's keys and the queue; got "
                         f"--supcon-variant {cfg.supcon_variant}")


SIMCLR_QUEUE = Method(
    name="simclr-queue",
    summary="SimCLR with a momentum queue: queries against the batch's and K queued keys of a momentum encoder (MoCo)",
    build=lambda cfg, data: _build(cfg, data, labelled=False),
    check=check_queue,
    defaults={"temperature": 0.2, **DEFAULTS},  # MoCo v2 (Chen et al. 2020, Sec. 3)
    options=OPTIONS,
    ignored=("loss", "supcon_variant", "margin", "semi_hard"),
)

SUPCON_QUEUE = Method(
    name="supcon-queue",
    summary="SupCon with a momentum queue: queued keys of the anchor's class are positives (SupCon's memory variant)",
    build=lambda cfg, data: _build(cfg, data, labelled=True),
    check=check_queue,
    defaults={"temperature": 0.1, **DEFAULTS},  # SupCon Sec. 4
    options=OPTIONS,
    ignored=("loss", "supcon_variant", "margin", "semi_hard"),
    needs_labels=True,
)
