"""Helpers for multi-process training that are no-ops on a single process.

Every function here works, and is tested, without ``torch.distributed`` being
initialised: it then behaves as a world of one process (rank 0, size 1), and
the gathers return their input. This keeps the losses usable and testable on a
single CPU.

The one piece of real work is :func:`gather_with_grad`. A contrastive loss on
rank r compares its own anchors with the embeddings of every rank, so the
gradient of rank r's loss reaches the embeddings of every other rank. The
backward of the gather therefore sums (all-reduces) the incoming gradients over
ranks and keeps this rank's slice. Each rank then holds
``d(sum_q loss_q) / d z_r``; DDP's gradient *averaging* over the K ranks turns
that into the gradient of ``mean_q loss_q``, which the losses arrange to equal
the one-process loss over all K*B samples (see ``contrastkit.losses``).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "get_rank", "get_world_size", "gather_with_grad", "gather_no_grad"]


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is available and initialised.

    Returns:
        True inside an initialised process group, False otherwise.
    """
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank, 0 when not distributed.

    Returns:
        The rank in the default process group, or 0.
    """
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """The number of processes, 1 when not distributed.

    Returns:
        The size of the default process group, or 1.
    """
    return dist.get_world_size() if is_distributed() else 1


def _gather_sizes(tensor: torch.Tensor, world_size: int) -> list[int]:
    """All-gather the first dimension of ``tensor`` from every rank."""
    size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _all_gather_padded(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All-gather tensors whose first dimension may differ between ranks."""
    longest = max(sizes)
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad], dim=0)
    else:
        padded = tensor.contiguous()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)], dim=0)  # (sum(sizes), ...)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward all-reduces and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world_size = get_world_size()
        sizes = _gather_sizes(tensor, world_size)
        rank = get_rank()
        ctx.start = sum(sizes[:rank])
        ctx.count = sizes[rank]
        return _all_gather_padded(tensor.detach(), sizes)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.count]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank, keeping the autograd graph.

    The backward sums the gradient arriving at the gathered tensor over all
    ranks and returns this rank's slice, so that the gradient of this rank's
    inputs is the gradient of the *sum* of all ranks' losses. The first
    dimension may differ between ranks; the other dimensions must agree.

    Args:
        tensor: this rank's tensor.

    Returns:
        The tensors of ranks 0..K-1 concatenated along dim 0; ``tensor`` itself
        when not distributed.

    Shape:
        tensor (B_r, *) -> (sum_r B_r, *).
    """
    if get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank without a gradient (labels, ids).

    Args:
        tensor: this rank's tensor; the first dimension may differ between ranks.

    Returns:
        The tensors of ranks 0..K-1 concatenated along dim 0; ``tensor`` itself
        when not distributed.

    Shape:
        tensor (B_r, *) -> (sum_r B_r, *).
    """
    if get_world_size() == 1:
        return tensor
    with torch.no_grad():
        sizes = _gather_sizes(tensor, get_world_size())
        return _all_gather_padded(tensor.detach(), sizes)
