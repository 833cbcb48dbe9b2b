"""Gradient caching: the full-batch contrastive gradient with one micro-batch of activations.

Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup". The loss couples every sample of the batch, so it cannot be
split into independent micro-batches; but its input, the embeddings, is small.
:func:`cached_backward`

1. runs every micro-batch forward without a graph and keeps only the embeddings;
2. computes the loss on all embeddings and its gradient w.r.t. them;
3. runs each micro-batch forward again with a graph and back-propagates its slice
   of that gradient, accumulating parameter gradients.

The RNG state is restored before each re-forward, so randomness inside the model
(dropout, stochastic depth) matches the first pass. The result equals a plain
full-batch backward exactly (to float round-off) for models without batch norm.
With batch norm, each micro-batch is normalised with its own statistics, in both
passes alike, so the gradient is the exact gradient of the "per-micro-batch BN"
model (what per-device BN does in data-parallel training), not of full-batch BN;
the running statistics are updated once, in the second pass.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from .forward import forward_views

__all__ = ["cached_backward"]


def _bn_buffers(model: nn.Module) -> list[tuple[nn.Module, dict[str, torch.Tensor]]]:
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, {k: getattr(m, k).clone() for k in ("running_mean", "running_var",
                                                                   "num_batches_tracked")
                              if getattr(m, k, None) is not None}))
    return saved


def _rng_snapshot(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _rng_restore(snapshot: tuple, device: torch.device) -> None:
    cpu, cuda = snapshot
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def cached_backward(
    model: nn.Module,
    objective: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    views: torch.Tensor,
    labels: torch.Tensor | None,
    micro_batch_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    channels_last: bool = False,
    scale: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Leave in ``model``'s parameters the gradient of the full-batch loss, holding one micro-batch.

    Args:
        model: returns ``(h, out)`` for an image batch (a :class:`~contrastkit.ContrastiveModel`,
            possibly wrapped in DistributedDataParallel).
        objective: maps outputs (N, V, D) and labels (N,) (or None) to a scalar loss, e.g.
            ``lambda z, y: SupConLoss()(z, y)``.
        views: the batch's views.
        labels: labels of the N samples, or None.
        micro_batch_size: samples per micro-batch (each with all its V views).
        autocast: factory of the autocast context for the forward passes.
        channels_last: convert inputs to channels_last.
        scale: applied to the loss before its gradient is taken (fp16 loss scaling, e.g. ``GradScaler.scale``); the
            parameters' gradients are then scaled alike.

    Returns:
        The loss, detached.

    Raises:
        ValueError: a micro-batch size < 1, or views not of shape (N, V, C, H, W).

    Shape:
        views (N, V, C, H, W), labels (N,).
    """
    if views.ndim != 5:
        raise ValueError(f"views must have shape (N, V, C, H, W), got {tuple(views.shape)}")
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    autocast = autocast or contextlib.nullcontext
    n = views.shape[0]
    chunks = [slice(i, min(i + micro_batch_size, n)) for i in range(0, n, micro_batch_size)]
    device = views.device

    def forward(chunk: slice) -> torch.Tensor:
        return forward_views(model, views[chunk], channels_last, autocast)  # (n_c, V, D)

    # Pass 1: embeddings only, no graph; BN running stats restored afterwards.
    bn_saved = _bn_buffers(model)
    snapshots, outs = [], []
    with torch.no_grad():
        for chunk in chunks:
            snapshots.append(_rng_snapshot(device))
            outs.append(forward(chunk))
    for module, buffers in bn_saved:
        for key, value in buffers.items():
            getattr(module, key).copy_(value)

    # The loss and its gradient w.r.t. the embeddings.
    cached = torch.cat(outs).detach().requires_grad_(True)  # (N, V, D)
    loss = objective(cached, labels)
    (grad,) = torch.autograd.grad(loss if scale is None else scale(loss), cached)  # (N, V, D)

    # Pass 2: re-forward each micro-batch with a graph, back-propagate its gradient slice.
    after = _rng_snapshot(device)
    no_sync = getattr(model, "no_sync", None)
    for i, chunk in enumerate(chunks):
        _rng_restore(snapshots[i], device)
        last = i == len(chunks) - 1
        ctx = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
        with ctx:
            out = forward(chunk)
            out.backward(grad[chunk])
    _rng_restore(after, device)
    return loss.detach()
