"""The multi-class N-pair loss of Sohn (2016), on cosine similarities."""
from __future__ import annotations

import torch
from torch import nn

from ._contrastive import contrastive_loss
from ._validation import check_flag, check_pair

__all__ = ["NPairLoss"]


class NPairLoss(nn.Module):
    """Multi-class N-pair loss (Sohn, NeurIPS 2016, eq. 3), as SEED.md writes it.

    With u an anchor view, v+ its other view and v-_k the 2(N-1) other views,
    all L2-normalised::

        l(u) = log(1 + sum_k exp(u.v-_k - u.v+))

    averaged over the 2N anchors. This is exactly NT-Xent at tau = 1
    (``log(1 + sum_k exp(s_k - s+)) = -log(exp(s+) / (exp(s+) + sum_k exp(s_k)))``),
    the sense in which SupCon generalises the N-pair loss (SupCon Sec. 3.2), so
    it runs on the same exact tiled kernel. Sohn's L2 penalty on the embeddings
    has no role once they are normalised. No distributed gathering.

    Args:
        check_values: as :class:`NTLogisticLoss`.

    Shape:
        z1 (N, D), z2 (N, D) -> scalar.
    """

    def __init__(self, check_values: bool = True) -> None:
        super().__init__()
        self.check_values = check_flag("check_values", check_values)

    def extra_repr(self) -> str:
        return "" if self.check_values else "check_values=False"

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Mean N-pair loss over the 2N anchors.

        Inputs, dtypes and errors (N < 2 included) as :class:`NTXentLoss`.
        """
        z1, z2 = check_pair(z1, z2, self.check_values)
        features = torch.stack([z1, z2], dim=1)  # (N, 2, D)
        return contrastive_loss(
            features, None, temperature=1.0, variant="out", chunk_size=None, gather_distributed=False, who="NPairLoss"
        )
