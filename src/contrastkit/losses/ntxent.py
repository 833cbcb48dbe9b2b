"""NT-Xent, the normalized temperature-scaled cross entropy of SimCLR."""
from __future__ import annotations

import torch
from ._contrastive import TiledContrastiveLoss
from ._validation import check_pair

__all__ = ["NTXentLoss"]


class NTXentLoss(TiledContrastiveLoss):
    """NT-Xent loss (SimCLR, Chen et al. 2020, Sec. 2.1, eq. 1).

    For each of the 2N views, the other view of the same sample is the
    positive and the other 2(N-1) views are the negatives; with cosine
    similarity and temperature tau::

        l(i, j) = -log( exp(z_i.z_j / tau) / sum_{k != i} exp(z_i.z_k / tau) )

    and the loss is the mean of l(i, j) over all 2N anchors. Computed by the
    exact tiled kernel of ``contrastkit.losses._tiled`` (the SupCon kernel with
    V = 2 and no labels): memory O(chunk * 2N + N * D), never (2N)^2.

    The default tau = 0.5 is SimCLR's CIFAR-10 setting (App. B.9); at ImageNet
    scale the paper's best is tau = 0.1 with batch 4096 (Table 5).

    Distributed: with ``gather_distributed=True`` inside an initialised process
    group, the views of every rank are gathered (with gradient) and this rank's
    2B anchors are compared with all 2KB candidates. The local loss is scaled so
    that, with DDP's gradient averaging, loss and gradients equal those of one
    process holding the whole batch (the mean over ranks of the returned values
    is the global loss). Every rank must call the loss (it communicates).

    Input dtypes: float32 and float64 are computed as they are; float16 and
    bfloat16 are computed in float32 and the loss is returned in float32, as
    ``torch.autocast`` does for losses (gradients reach the inputs in their dtype). Autocast is off inside
    every loss of this package: called inside ``torch.autocast``, a loss gives the fp32 value and gradients.

    Args:
        temperature: tau > 0.
        chunk_size: anchor rows per tile; None picks ~16 MiB tiles (>= 128 rows) on CPU, ~256 MiB on CUDA.
        gather_distributed: gather candidates from all ranks when ``torch.distributed`` is initialised.
        normalize: L2-normalise z before the dot product (cosine similarity, as the paper). False uses
            the raw dot product z_i.z_k / tau, the "no l2 norm" rows of SimCLR Table 5 (which pair it with
            large tau such as 10 or 100); kept for that ablation, not recommended.
        check_values: refuse NaN/inf inputs with a ValueError (default). That check reads a flag back from the
            device, a host synchronisation on GPUs; False skips it, for training loops that check the loss
            themselves (contrastkit's trainer does, every ``--log-every`` steps): a NaN/inf input then gives a
            NaN loss. With ``check_values=False`` a call never synchronises with the host, except when it
            gathers uneven batches across ranks (see ``even_batches``); below tau = 0.0435 each row is then shifted
            by its own max, where the checked loss searches the tiles for underflowing rows (see ``_tiled``).
        even_batches: under ``torch.distributed``, every rank passes the same N (a ``DistributedSampler`` with
            ``drop_last=True`` guarantees it; contrastkit's trainer sets this). The gathers then skip the size
            exchange, which reads the sizes back to the host. Default False: ranks may pass different N (a last
            short batch), at one size exchange per call. Set it only when the sizes are equal: gloo raises on
            unequal sizes, NCCL's result is undefined.

    Raises:
        TypeError: temperature not a real number, chunk_size not an int.
        ValueError: temperature not finite or <= 0, chunk_size < 1.

    Shape:
        z1 (N, D), z2 (N, D) -> scalar.
    """

    def __init__(
        self,
        temperature: float = 0.5,
        chunk_size: int | None = None,
        gather_distributed: bool = True,
        normalize: bool = True,
        check_values: bool = True,
        even_batches: bool = False,
    ) -> None:
        super().__init__(temperature, chunk_size, gather_distributed, normalize, check_values, even_batches)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Mean NT-Xent over the 2N anchors.

        Args:
            z1: projections of the first view (need not be normalised).
            z2: projections of the second view; row n of z1 and z2 is one sample.

        Returns:
            The scalar loss.

        Raises:
            TypeError: non-tensor, non-floating or mismatched dtypes.
            ValueError: not 2-D, shapes differ, non-finite values, or N < 2
                (an anchor would have no negative).

        Shape:
            z1 (N, D), z2 (N, D) -> ().
        """
        z1, z2 = check_pair(z1, z2, self.check_values)
        features = torch.stack([z1, z2], dim=1)  # (N, 2, D)
        return self._contrastive(features, None, "out")
