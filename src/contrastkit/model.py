"""The model wrapper: encoder f and projection head g, forward returns (h, z)."""
from __future__ import annotations

import torch
from torch import nn

from .encoders import Encoder, create_encoder
from .heads import ProjectionHead

__all__ = ["ContrastiveModel", "build_model"]


class ContrastiveModel(nn.Module):
    """f followed by g. ``forward(x)`` returns ``(h, z)``; h is what downstream tasks use.

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


def build_model(
    encoder: str = "resnet18",
    *,
    cifar_stem: bool = False,
    width: float = 1.0,
    head: str = "mlp",
    proj_hidden_dim: int | None = None,
    proj_dim: int = 128,
    num_classes: int | None = None,
    head_layers: int = 2,
) -> ContrastiveModel:
    """Build f and g from names.

    ``head_layers`` is the number K of Linear layers of the MLP head (2: SimCLR; 3: SimCLRv2). With
    ``num_classes`` set (the cross-entropy baseline), the head is a linear classifier on h instead of a
    projection head.
    """
    kwargs = {"cifar_stem": cifar_stem, "width": width} if not encoder.startswith("timm:") else {}
    f = create_encoder(encoder, **kwargs)
    if num_classes is not None:
        g: nn.Module = nn.Linear(f.feature_dim, num_classes)
    else:
        g = ProjectionHead(f.feature_dim, proj_hidden_dim, proj_dim, kind=head, layers=head_layers)
    return ContrastiveModel(f, g)
