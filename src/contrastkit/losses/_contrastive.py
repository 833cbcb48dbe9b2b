"""From a multiviewed batch to the tiled kernel: normalise, gather, group ids, scale.

Shared by :class:`~contrastkit.losses.NTXentLoss` (V = 2, no labels) and
:class:`~contrastkit.losses.SupConLoss`. Inputs are validated by the callers.

Rows are laid out sample-major: row ``n * V + v`` is view v of sample n, so
the gathered batch of every rank is one reshape away from the kernel's (M, D)
candidates, and this rank's anchors are a contiguous block of rows.
"""
from __future__ import annotations

import torch
from torch import nn

from ..runtime import distributed
from ._tiled import group_counts, supcon_tiled
from ._weighted import multilabel_loss
from ._validation import check_chunk_size, check_flag, check_temperature, computes_in_fp32, compute_dtype, normalize

__all__ = ["TiledContrastiveLoss", "contrastive_loss", "group_ids"]


class TiledContrastiveLoss(nn.Module):
    """The settings :class:`~contrastkit.losses.NTXentLoss` and :class:`~contrastkit.losses.SupConLoss` share.

    Validated once here; :meth:`_contrastive` hands them to :func:`contrastive_loss`. The arguments are
    documented on the two loss classes.
    """

    def __init__(
        self,
        temperature: float,
        chunk_size: int | None,
        gather_distributed: bool,
        normalize: bool,
        check_values: bool,
        even_batches: bool,
    ) -> None:
        super().__init__()
        self.normalize = check_flag("normalize", normalize)
        self.check_values = check_flag("check_values", check_values)
        self.even_batches = check_flag("even_batches", even_batches)
        self.temperature = check_temperature(temperature)
        self.chunk_size = check_chunk_size(chunk_size)
        self.gather_distributed = bool(gather_distributed)

    def extra_repr(self) -> str:
        parts = [f"temperature={self.temperature}", f"chunk_size={self.chunk_size}",
                 f"gather_distributed={self.gather_distributed}"]
        # the non-default switches only
        parts += [text for on, text in ((not self.normalize, "normalize=False"),
                                        (not self.check_values, "check_values=False"),
                                        (self.even_batches, "even_batches=True")) if on]
        return ", ".join(parts)

    def _contrastive(self, features: torch.Tensor, labels: torch.Tensor | None, variant: str) -> torch.Tensor:
        if labels is not None and labels.dim() == 2:  # multi-hot: weighted positives (L_out, checked by the caller)
            return multilabel_loss(features, labels, temperature=self.temperature, chunk_size=self.chunk_size,
                                   gather_distributed=self.gather_distributed, normalize_features=self.normalize,
                                   even_batches=self.even_batches, sync_free=not self.check_values,
                                   who=type(self).__name__)
        return contrastive_loss(
            features,
            labels,
            temperature=self.temperature,
            variant=variant,
            chunk_size=self.chunk_size,
            gather_distributed=self.gather_distributed,
            who=type(self).__name__,
            normalize_features=self.normalize,
            sync_free=not self.check_values,
            even_batches=self.even_batches,
        )


def group_ids(labels: torch.Tensor | None, num_samples: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Group id of each sample: samples with the same label >= 0 share one; every other sample has its own.

    Every unlabelled sample (a negative label, -1), and every sample when ``labels`` is None, is a group of its own.
    The ids lie in ``[0, N)`` and G = N, an upper bound known on the host: ids are not compact (an id nobody uses
    is an empty group, which the kernel allows), so nothing is read back from the device. Sorting rather than
    ``torch.unique``, whose output size must be read back.

    Args:
        labels: int64 labels, or None.
        num_samples: N.
        device: where the ids live.

    Returns:
        ``(ids, G)``: the ids and the number of group ids, G = N.

    Shape:
        labels (N,) -> ids (N,).
    """
    if labels is None:
        return torch.arange(num_samples, device=device), num_samples
    sorted_labels, order = torch.sort(labels)  # (N,)
    starts = torch.ones(num_samples, dtype=torch.bool, device=device)  # (N,) a new group starts here
    starts[1:] = (sorted_labels[1:] != sorted_labels[:-1]) | (sorted_labels[1:] < 0)
    ids = torch.empty_like(labels)
    ids[order] = torch.cumsum(starts, dim=0) - 1
    return ids, num_samples


@computes_in_fp32
def contrastive_loss(
    features: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    temperature: float,
    variant: str,
    chunk_size: int | None,
    gather_distributed: bool,
    who: str,
    normalize_features: bool = True,
    sync_free: bool = False,
    even_batches: bool = False,
) -> torch.Tensor:
    """Mean SupCon loss (L_out or L_in) over this rank's anchors, see the loss classes.

    Args:
        features: validated embeddings (not yet normalised).
        labels: validated int64 labels (-1 = unlabelled) or None (each sample its own class).
        temperature: tau.
        variant: ``"out"`` or ``"in"``.
        chunk_size: anchor rows per tile, or None.
        gather_distributed: gather candidates from every rank when distributed.
        who: the calling class, for error messages.
        normalize_features: L2-normalise the embeddings (cosine similarity, the papers' loss); False uses
            the dot product of the raw embeddings (SimCLR Table 5's "no l2 norm" rows).
        sync_free: with labels, keep the number of anchors with a positive on the device (no read-back); if there
            is none, the loss is NaN instead of a ValueError. The kernel never searches for underflowing rows
            (see ``supcon_tiled``).
        even_batches: every rank passes the same N, so the gathers need no size exchange (none is read back).

    Returns:
        The loss: float32 for float16/bfloat16 features (as ``torch.autocast``
        computes losses), else the features' dtype.

    Raises:
        ValueError: fewer than 2 samples (no anchor would have a negative), or no anchor with a positive.

    Shape:
        features (N, V, D), labels (N,) -> ().
    """
    N, V, D = features.shape
    if normalize_features:
        z = normalize(features)  # (N, V, D) in float32/float64
    else:
        z = features.to(compute_dtype(features.dtype))  # (N, V, D)
    world_size = distributed.get_world_size() if gather_distributed else 1
    z, labels, start = _gather_candidates(z, labels, world_size, even_batches)  # (N_all, V, D), (N_all,)
    n_all = z.shape[0]
    _check_enough_samples(n_all, V, who, world_size)
    ids, num_groups = group_ids(labels, n_all, z.device)  # (N_all,)
    num_valid = _valid_anchor_count(labels, ids, num_groups, V, who, sync_free, z.dtype)
    rows = z.reshape(n_all * V, D)  # (M, D), row n*V + v
    row_groups = ids[:, None].expand(n_all, V).reshape(n_all * V)  # (M,) id of sample n on rows n*V .. n*V+V-1
    # DDP averages gradients over the K ranks; scaling the local sum by K / (valid anchors of all
    # ranks) makes that average the gradient of the one-process mean over all K*B samples.
    scale = world_size / num_valid  # a 0-dim tensor when sync_free with labels (inf, so a NaN loss, if 0)
    loss = supcon_tiled(
        rows,
        row_groups,
        temperature=temperature,
        variant=variant,
        num_groups=num_groups,
        anchor_start=start * V,
        anchor_count=N * V,
        scale=scale,
        chunk_size=chunk_size,
        unit_norm=normalize_features,
        sync_free=sync_free,
    )
    return loss


def _gather_candidates(z: torch.Tensor, labels: torch.Tensor | None, world_size: int,
                       even_batches: bool) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Every rank's embeddings (with gradient) and labels, and where this rank's rows start among them."""
    if world_size == 1:
        return z, labels, 0
    # Uneven batches: one size exchange, read back once, serves both gathers.
    sizes = [z.shape[0]] * world_size if even_batches else distributed.gather_sizes(z)
    start = sum(sizes[: distributed.get_rank()])
    z = distributed.gather_with_grad(z, sizes)  # (N_all, V, D)
    if labels is not None:
        labels = distributed.gather_no_grad(labels, sizes)  # (N_all,)
    return z, labels, start


def _check_enough_samples(n_all: int, V: int, who: str, world_size: int) -> None:
    """Every anchor needs a negative: at least 2 views and 2 samples in the (gathered) batch."""
    if n_all * V < 2:
        raise ValueError(f"{who} needs at least 2 views in the batch (N * V >= 2), got N={n_all}, V={V}")
    if n_all < 2:  # labels or not: one sample has no negative (for V = 2 its loss is identically 0)
        raise ValueError(
            f"{who} needs at least 2 samples so that every anchor has a negative, got N={n_all}"
            + (" over all ranks" if world_size > 1 else "")
        )


def _valid_anchor_count(labels: torch.Tensor | None, ids: torch.Tensor, num_groups: int, V: int, who: str,
                        sync_free: bool, dtype: torch.dtype) -> int | torch.Tensor:
    """The number of anchors with a positive, the mean's denominator: an int, or a 0-dim device tensor of
    ``dtype`` when ``sync_free`` with labels (no read-back)."""
    n_all = ids.shape[0]
    if labels is None:  # every sample its own group; the callers ensure V >= 2, so every anchor has a positive
        return n_all * V
    counts = group_counts(ids, num_groups)  # (G,)
    # Anchors without positive (V = 1 and a label seen once, or -1) are left out of the mean.
    with_positive = counts[ids] * V > 1  # (N_all,)
    num_valid = with_positive.sum().to(dtype) * V  # () on the device
    if sync_free:
        return num_valid
    num_valid = int(num_valid)
    if num_valid == 0:
        raise ValueError(
            f"{who}: no anchor has a positive (V={V} view(s) and no label appears twice among the "
            f"{n_all} samples); use V >= 2 views or batches with repeated labels"
        )
    return num_valid
