"""The supervised contrastive loss SupCon, L_out and L_in."""
from __future__ import annotations

import torch
from ._contrastive import TiledContrastiveLoss
from ._validation import check_embeddings, check_labels, check_multi_hot

__all__ = ["SupConLoss"]

_VARIANTS = ("out", "in")


class SupConLoss(TiledContrastiveLoss):
    """Supervised contrastive loss (Khosla et al. 2020, eq. 2 and 3).

    The batch holds N samples with V views each (VN anchors). For anchor i,
    A(i) is every other view in the batch and P(i) the views in A(i) with i's
    label. With cosine similarity and temperature tau::

        L_out: l_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p/tau) / sum_{a in A(i)} exp(z_i.z_a/tau) )
        L_in:  l_i = -log( 1/|P(i)| sum_{p in P(i)} exp(z_i.z_p/tau) / sum_{a in A(i)} exp(z_i.z_a/tau) )

    averaged over anchors. L_out (the default) is the better one (SupCon
    Table 1: 78.7 against 67.4 top-1); tau = 0.1 is the paper's setting (Sec. 4).

    Labels:
        * ``None``: each sample is its own class (the self-supervised loss, SupCon
          eq. 1); for V = 2 this equals :class:`NTXentLoss`. Needs V >= 2 and N >= 2.
        * label -1: an unlabelled sample, whose only positives are its own other
          views (partly labelled batches); it is a negative for every other anchor.
        * An anchor without any positive (only possible with V = 1: a label seen
          once in the batch, or -1) is left out of the average: the mean runs over
          anchors with at least one positive. If no anchor has one, ValueError.
        * A batch of one class is allowed: every other view is a positive.
        * With or without labels the batch needs N >= 2 samples (over all ranks):
          one sample's views have no negative, so there is no contrast (for V = 2
          the loss is identically 0); ValueError, as for :class:`NTXentLoss`.
        * Multi-hot labels (N, C), L_out only (multi-label SupCon): positives are weighted. Two views of one sample
          weigh w = 1; two different samples weigh the Jaccard overlap of their label sets,
          w_ip = |A_i n A_p| / |A_i u A_p| (0 when both are empty), and::

              l_i = -(1 / sum_p w_ip) sum_p w_ip log( exp(z_i.z_p/tau) / sum_{a in A(i)} exp(z_i.z_a/tau) )

          averaged over the anchors with sum_p w_ip > 0. With one-hot labels every weight is 0 or 1 and this is
          L_out above exactly. A sample with an empty label set has its own views as its only positives (as -1).
          The weights of each tile of anchors are computed when the tile is (``_weighted.py``): no (VN)^2 matrix.

    A queue of keys from a momentum encoder (SupCon's memory-based variant, MoCo) is
    :class:`MomentumContrastLoss`, which contrasts queries with keys.

    Computed by the exact tiled kernel of ``contrastkit.losses._tiled``: memory
    O(chunk * VN + VN * D), never (VN)^2. Distributed use, input dtypes: as
    for :class:`NTXentLoss` (labels are gathered too; label values are global).

    Args:
        temperature: tau > 0.
        variant: ``"out"`` (L_out) or ``"in"`` (L_in).
        chunk_size: anchor rows per tile; None picks ~16 MiB tiles (>= 128 rows) on CPU, ~256 MiB on CUDA.
        gather_distributed: gather candidates and labels from all ranks when distributed.
        normalize: L2-normalise the features (the paper's loss); False uses raw dot products (see
            :class:`NTXentLoss`).
        check_values: as :class:`NTXentLoss`, and for labels too: True refuses labels < -1 and a batch in which no
            anchor has a positive (ValueError), which reads the device; False skips both (any negative label then
            counts as unlabelled) and a batch without positives gives a NaN loss. Then
            no call synchronises with the host except a gather of uneven batches across ranks (where the
            checked loss searches the tiles for underflowing rows, below tau = 0.0435 or for L_in without l2
            normalisation, the unchecked one shifts by row maxima, and L_in's positives by theirs).
        even_batches: as :class:`NTXentLoss`.

    Raises:
        TypeError: temperature not a real number, variant not a str, chunk_size not an int.
        ValueError: temperature not finite or <= 0, unknown variant, chunk_size < 1.

    Shape:
        features (N, V, D), labels (N,) or None -> scalar.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        variant: str = "out",
        chunk_size: int | None = None,
        gather_distributed: bool = True,
        normalize: bool = True,
        check_values: bool = True,
        even_batches: bool = False,
    ) -> None:
        super().__init__(temperature, chunk_size, gather_distributed, normalize, check_values, even_batches)
        if not isinstance(variant, str):
            raise TypeError(f"variant must be one of {_VARIANTS}, got {type(variant).__name__} {variant!r}")
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
        self.variant = variant

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, " + super().extra_repr()

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean SupCon loss over the anchors that have a positive.

        Args:
            features: V views of N samples (need not be normalised).
            labels: integer class of each sample, -1 for unlabelled; multi-hot labels (N, C) (L_out only); or None.

        Returns:
            The scalar loss.

        Raises:
            TypeError: features not a floating tensor; class labels not an integer tensor.
            ValueError: features not 3-D or not finite; labels not of shape (N,) or (N, C), class labels < -1,
                multi-hot labels other than 0/1 or with ``variant="in"``; N < 2 (with or without labels); labels
                None with V < 2; no anchor with a positive.

        Shape:
            features (N, V, D), labels (N,) or (N, C) -> ().
        """
        features = check_embeddings("features", features, "NVD", self.check_values)
        N, V, _ = features.shape
        if isinstance(labels, torch.Tensor) and labels.dim() == 2:
            if self.variant != "out":
                raise ValueError("multi-hot labels (N, C) are defined for L_out (variant='out'); got variant='in'")
            labels = check_multi_hot(labels, N, features.device, self.check_values)
        elif labels is not None:
            labels = check_labels(labels, N, features.device, self.check_values)
        elif V < 2:
            raise ValueError(
                f"SupConLoss with labels=None needs V >= 2 views per sample (the positives are the other "
                f"views), got features of shape {tuple(features.shape)} with V={V}"
            )
        return self._contrastive(features, labels, self.variant)
