"""The contrastive model: encoder f and projection head g; ``forward`` returns (h, z)."""
from __future__ import annotations

import torch
from torch import nn

from .encoders import Encoder

__all__ = ["ContrastiveModel"]


class ContrastiveModel(nn.Module):
    """f followed by g. ``forward(x)`` returns ``(h, z)``; h is what downstream tasks use.

    ``head`` is a :class:`~contrastkit.models.heads.ProjectionHead`, or an ``nn.Linear`` classifier for the
    cross-entropy baseline (then z holds logits). Build one with :func:`~contrastkit.models.build_model`.

    Shape:
        x (N, 3, H, W) -> h (N, encoder.feature_dim), z (N, head.out_dim).
    """

    def __init__(self, encoder: Encoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (N, F)
        z = self.head(h)  # (N, D)
        return h, z
