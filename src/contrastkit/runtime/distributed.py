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

from collections.abc import Sequence

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "get_rank", "get_world_size", "all_true", "gather_sizes", "gather_with_grad",
           "gather_no_grad"]


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


def all_true(flag: torch.Tensor) -> torch.Tensor:
    """Whether a 0-dim bool flag holds on every rank: one all-reduce (MIN), nothing read back to the host.

    Args:
        flag: this rank's flag, on its device.

    Returns:
        A 0-dim bool tensor, the same on every rank; ``flag`` itself when not distributed.
    """
    if get_world_size() == 1:
        return flag
    value = flag.to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value.bool()


def gather_sizes(tensor: torch.Tensor) -> list[int]:
    """The first dimension of ``tensor`` on every rank (one all-gather and one read back to the host).

    Args:
        tensor: this rank's tensor.

    Returns:
        ``[B_0, ..., B_{K-1}]``; ``[B]`` when not distributed.
    """
    world_size = get_world_size()
    if world_size == 1:
        return [tensor.shape[0]]
    size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = torch.empty(world_size, dtype=torch.long, device=tensor.device)
    _all_gather_equal(sizes, size)
    return sizes.tolist()  # the one host read


def _all_gather_equal(out: torch.Tensor, tensor: torch.Tensor) -> None:
    """All-gather same-shaped tensors into ``out`` (K * B, ...) with one collective."""
    gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the newer name first
    gather_single(out, tensor)


def _resolve_sizes(tensor: torch.Tensor, sizes: Sequence[int] | None) -> list[int]:
    """Every rank's first dimension: exchanged when None, else the caller's, validated against the world and this
    rank's tensor (host ints, no device read)."""
    if sizes is None:
        return gather_sizes(tensor)
    sizes = [int(n) for n in sizes]
    world_size, rank = get_world_size(), get_rank()
    if len(sizes) != world_size or sizes[rank] != tensor.shape[0] or min(sizes) < 0:
        raise ValueError(
            f"sizes must give the first dimension of every rank's tensor ({world_size} non-negative ints, "
            f"entry {rank} equal to this rank's {tensor.shape[0]}), got {sizes}"
        )
    return sizes


def _all_gather_padded(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All-gather tensors whose first dimension may differ between ranks."""
    longest = max(sizes)
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad], dim=0)
    else:
        padded = tensor.contiguous()
    out = padded.new_empty((len(sizes) * longest, *padded.shape[1:]))  # (K * max B_r, ...)
    _all_gather_equal(out, padded)
    if all(n == longest for n in sizes):
        return out
    return torch.cat([out[r * longest: r * longest + n] for r, n in enumerate(sizes)], dim=0)  # (sum(sizes), ...)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward all-reduces and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:  # type: ignore[override]
        rank = get_rank()
        ctx.start = sum(sizes[:rank])
        ctx.count = sizes[rank]
        return _all_gather_padded(tensor.detach(), sizes)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.count], None


def gather_with_grad(tensor: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank, keeping the autograd graph.

    The backward sums the gradient arriving at the gathered tensor over all
    ranks and returns this rank's slice, so that the gradient of this rank's
    inputs is the gradient of the *sum* of all ranks' losses. The first
    dimension may differ between ranks; the other dimensions must agree.

    Args:
        tensor: this rank's tensor.
        sizes: the first dimension of every rank's tensor, when the caller knows it (e.g. ``[B] * K`` for the
            even batches of a ``DistributedSampler`` with ``drop_last``); None exchanges the sizes first,
            which reads them back to the host (a synchronisation on GPUs). Sizes that are wrong on another
            rank are not detected here: gloo raises, NCCL's result is undefined.

    Returns:
        The tensors of ranks 0..K-1 concatenated along dim 0; ``tensor`` itself
        when not distributed.

    Raises:
        ValueError: ``sizes`` not one entry per rank, or this rank's entry not ``tensor.shape[0]``.

    Shape:
        tensor (B_r, *) -> (sum_r B_r, *).
    """
    if get_world_size() == 1:
        return tensor
    sizes = _resolve_sizes(tensor, sizes)
    return _GatherWithGrad.apply(tensor, sizes)


def gather_no_grad(tensor: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank without a gradient (labels, ids).

    Args:
        tensor: this rank's tensor; the first dimension may differ between ranks.
        sizes: as for :func:`gather_with_grad`.

    Returns:
        The tensors of ranks 0..K-1 concatenated along dim 0; ``tensor`` itself
        when not distributed.

    Raises:
        ValueError: as for :func:`gather_with_grad`.

    Shape:
        tensor (B_r, *) -> (sum_r B_r, *).
    """
    if get_world_size() == 1:
        return tensor
    sizes = _resolve_sizes(tensor, sizes)
    with torch.no_grad():
        return _all_gather_padded(tensor.detach(), sizes)
