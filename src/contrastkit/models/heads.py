"""Projection head g(.): maps h to z, where the contrastive loss is applied (SimCLR Sec. 2.1).

The MLP head is K Linear layers: K - 1 Linear-BN-ReLU blocks, then a Linear layer to z. K = 2 is SimCLR's
head (Linear-BN-ReLU-Linear); SimCLRv2 (Chen et al. 2020, arXiv 2006.10029, Sec. 2.2) uses K = 3 and fine-tunes
from the output of the first block rather than from h (:meth:`ProjectionHead.prefix`).
"""
from __future__ import annotations

import numbers

import torch
from torch import nn

__all__ = ["ProjectionHead", "HeadPrefix", "HEAD_KINDS", "check_head_layers"]

HEAD_KINDS = ("mlp", "linear", "none")


def check_head_layers(kind: str, layers: object) -> int:
    """Check the number of Linear layers K of a head of ``kind``.

    Returns:
        ``layers`` as an int.

    Raises:
        TypeError: ``layers`` is not an int.
        ValueError: K < 2 for an MLP head (K = 1 is ``head="linear"``), or K != 2 (the default) for a
            ``linear`` or ``none`` head, which have no hidden layers.
    """
    if isinstance(layers, bool) or not isinstance(layers, numbers.Integral):
        raise TypeError(f"--head-layers must be an integer, got {type(layers).__name__} {layers!r}")
    layers = int(layers)
    if kind == "mlp" and layers < 2:
        raise ValueError(f"--head-layers must be >= 2 for the MLP head (2: Linear-BN-ReLU-Linear, SimCLR; 3: "
                         f"SimCLRv2), got {layers}; a single Linear layer is --head linear")
    if kind != "mlp" and layers != 2:
        raise ValueError(f"--head-layers applies to --head mlp only (a {kind!r} head has no hidden layers), "
                         f"got --head-layers {layers} with --head {kind}")
    return layers


class HeadPrefix(nn.Module):
    """The first L Linear-BN-ReLU blocks of an MLP head (L = 0: the identity), sharing their modules.

    Its parameters carry the names of the head they come from (``net.0.weight``, ``net.1.running_mean``, ...),
    so a network built on a prefix keeps the pretrained head's names for those layers.

    Shape:
        input (N, in_dim), output (N, out_dim) (``out_dim`` = hidden width, or ``in_dim`` for L = 0).
    """

    def __init__(self, modules: list[nn.Module], out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(*modules)
        self.out_dim = out_dim

    @property
    def blocks(self) -> int:
        """L, the number of Linear-BN-ReLU blocks."""
        return len(self.net) // 3

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)  # (N, out_dim)


class ProjectionHead(nn.Module):
    """MLP with K - 1 hidden Linear-BN-ReLU blocks and a Linear output layer, or the ablation variants.

    ``kind="mlp"`` is SimCLR's nonlinear head (``layers=2``: Linear-BN-ReLU-Linear; SimCLRv2 uses
    ``layers=3``); ``"linear"`` a single Linear layer and ``"none"`` the identity (SimCLR Fig. 8 compares the
    three). The MLP's modules form one flat ``nn.Sequential`` (``net``), so a 2-layer head has the parameter
    names it always had (``net.0``, ``net.1``, ``net.3``).

    Args:
        in_dim: dimension of h.
        hidden_dim: width of every hidden layer of the MLP (default: ``in_dim``, as in SimCLR).
        out_dim: dimension of z (128, SimCLR Sec. 2.1).
        kind: ``"mlp"``, ``"linear"`` or ``"none"``.
        layers: K, the number of Linear layers of the MLP (>= 2; must stay 2 for the other kinds).

    Raises:
        ValueError: an unknown kind, non-positive dimensions, or a bad ``layers`` (:func:`check_head_layers`).

    Shape:
        input (N, in_dim), output (N, out_dim) (``in_dim`` for ``kind="none"``).
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128, kind: str = "mlp",
                 layers: int = 2) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {HEAD_KINDS}, got {kind!r}")
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"in_dim and out_dim must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        self.kind = kind
        self.num_layers = check_head_layers(kind, layers)
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim or in_dim
        if kind == "mlp":
            modules: list[nn.Module] = []
            width = in_dim
            for _ in range(self.num_layers - 1):
                modules += [nn.Linear(width, self.hidden_dim, bias=False), nn.BatchNorm1d(self.hidden_dim),
                            nn.ReLU(inplace=True)]
                width = self.hidden_dim
            modules.append(nn.Linear(width, out_dim))
            self.net = nn.Sequential(*modules)
            self.out_dim = out_dim
        elif kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
            self.out_dim = out_dim
        else:
            self.net = nn.Identity()
            self.out_dim = in_dim

    @property
    def hidden_blocks(self) -> int:
        """The number of Linear-BN-ReLU blocks (K - 1 for the MLP, 0 for the other kinds)."""
        return self.num_layers - 1 if self.kind == "mlp" else 0

    def prefix(self, blocks: int) -> HeadPrefix:
        """The first ``blocks`` Linear-BN-ReLU blocks as a module that shares this head's layers.

        ``prefix(0)`` is the identity (h itself); ``prefix(1)`` gives the output of the first block, where
        SimCLRv2 fine-tunes from (Sec. 2.2).

        Raises:
            TypeError: ``blocks`` is not an int.
            ValueError: ``blocks`` outside [0, :attr:`hidden_blocks`].
        """
        if isinstance(blocks, bool) or not isinstance(blocks, numbers.Integral):
            raise TypeError(f"the head layer must be an integer, got {type(blocks).__name__} {blocks!r}")
        if not 0 <= blocks <= self.hidden_blocks:
            raise ValueError(
                f"head layer {blocks} is out of range: this {self.kind} head with {self.num_layers} Linear layer(s) "
                f"has {self.hidden_blocks} hidden Linear-BN-ReLU block(s), so the layer must be in "
                f"[0, {self.hidden_blocks}] (0: h, the encoder's output)")
        modules = list(self.net)[: 3 * blocks] if blocks else []
        return HeadPrefix(modules, self.hidden_dim if blocks else self.in_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)  # (N, out_dim)
