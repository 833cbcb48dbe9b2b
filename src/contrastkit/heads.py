"""Projection head g(.): maps h to z, where the contrastive loss is applied (SimCLR Sec. 2.1)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ProjectionHead", "HEAD_KINDS"]

HEAD_KINDS = ("mlp", "linear", "none")


class ProjectionHead(nn.Module):
    """MLP with one hidden layer (Linear-BN-ReLU-Linear), or the ablation variants.

    ``kind="mlp"`` is SimCLR's nonlinear head; ``"linear"`` a single Linear layer and
    ``"none"`` the identity (SimCLR Fig. 8 compares the three).

    Args:
        in_dim: dimension of h.
        hidden_dim: hidden width of the MLP (default: ``in_dim``, as in SimCLR).
        out_dim: dimension of z (128, SimCLR Sec. 2.1).
        kind: ``"mlp"``, ``"linear"`` or ``"none"``.

    Shape:
        input (N, in_dim), output (N, out_dim) (``in_dim`` for ``kind="none"``).
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128, kind: str = "mlp") -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {HEAD_KINDS}, got {kind!r}")
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"in_dim and out_dim must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        self.kind = kind
        hidden_dim = hidden_dim or in_dim
        if kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim, bias=False),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, out_dim),
            )
            self.out_dim = out_dim
        elif kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
            self.out_dim = out_dim
        else:
            self.net = nn.Identity()
            self.out_dim = in_dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)  # (N, out_dim)
