"""A contrastive model with a momentum copy of f and g, whose outputs are the keys of a memory queue (MoCo).

Queries come from the trained network, keys from a copy of it that follows the network by an exponential moving
average, xi <- m xi + (1 - m) theta (He et al. 2020, eq. 2), and takes no gradient. Both come out of one forward
call, so the training loop runs this model like any other: ``forward(x) -> (h, outputs)``.

The copy moves when :meth:`MomentumModel.follow` is called: once per training step, by the objective that consumes
the keys (:class:`~contrastkit.methods.queue.QueueObjective`), which the loop calls once per step whether or not
gradient caching runs the forward pass several times (:mod:`contrastkit.train.gradcache`). It moves towards the
weights of that step's forward pass, before the optimiser updates them: one step behind MoCo, which moves it at the
start of the next step (with m = 0.99 the average spans about 100 steps). The forward pass itself never moves it,
since a step's forward calls cannot tell a new step from a gradient-caching re-run.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from .contrastive import ContrastiveModel

__all__ = ["MomentumEncoder", "MomentumModel", "MOMENTUM_RAMPS"]

#: how the momentum changes over training: ``off`` (constant m) or ``cosine`` (m to 1, BYOL Sec. 3.2, MoCo v3)
MOMENTUM_RAMPS = ("off", "cosine")


class MomentumEncoder(nn.Module):
    """The momentum copy of f and g: no gradient, moved by :meth:`MomentumModel.follow`.

    ``updates`` (the moves made so far, for the ramp) is the module's extra state, so a checkpoint holds it.

    Shape:
        x (N, 3, H, W) -> keys (N, D).
    """

    def __init__(self, network: ContrastiveModel) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(network.encoder)
        self.head = copy.deepcopy(network.head)
        self.requires_grad_(False)
        self.updates = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.head(self.encoder(x))  # (N, D)

    def get_extra_state(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])


class MomentumModel(nn.Module):
    """f and g, trained, with their momentum copy (:class:`MomentumEncoder`) under ``momentum``.

    ``encoder`` and ``head`` are the trained network's (what the kNN monitor, evaluation and export use); a
    checkpoint holds the copy's weights under ``momentum.``, which :func:`~contrastkit.models.load_checkpoint_model`
    leaves out when it rebuilds the trained network. The copy's parameters do not require gradients, so the
    optimiser (which takes only those that do) never sees them and DistributedDataParallel does not reduce them; its
    BatchNorm layers run in the model's mode, with their own statistics.

    Args:
        network: the trained network (its modules are used, not copied).
        momentum: m in [0, 1); with m = 0 the copy is the trained network of the last move.
        ramp: ``off``: m throughout; ``cosine``: m_t = 1 - (1 - m) (cos(pi t / T) + 1) / 2 at move t, from m to 1
            over ``total_steps`` T (BYOL Sec. 3.2; MoCo v3).
        total_steps: T of the ramp (the run's steps).

    Raises:
        ValueError: m outside [0, 1), an unknown ramp, or a cosine ramp without steps.

    Shape:
        x (N, 3, H, W) -> h (N, F), outputs (N, 2D): the queries z, then the keys.
    """

    def __init__(self, network: ContrastiveModel, momentum: float, ramp: str = "off", total_steps: int = 0) -> None:
        super().__init__()
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"the momentum m must be a number in [0, 1), got {momentum!r}")
        if ramp not in MOMENTUM_RAMPS:
            raise ValueError(f"ramp must be one of {', '.join(MOMENTUM_RAMPS)}, got {ramp!r}")
        if ramp == "cosine" and total_steps < 1:
            raise ValueError(f"a cosine ramp needs total_steps >= 1, got {total_steps}")
        self.encoder = network.encoder
        self.head = network.head
        self.momentum = MomentumEncoder(network)
        self.base_momentum, self.ramp, self.total_steps = float(momentum), ramp, int(total_steps)

    @property
    def key_dim(self) -> int:
        """D, the dimension of z and of the keys."""
        return int(self.head.out_dim)

    def momentum_at(self, update: int) -> float:
        """m for move number ``update`` of the copy (counted from 0)."""
        if self.ramp == "off":
            return self.base_momentum
        t = min(update, self.total_steps) / self.total_steps
        return 1.0 - (1.0 - self.base_momentum) * (math.cos(math.pi * t) + 1.0) / 2.0

    def _pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """(copy, trained) for every parameter of f and g."""
        return [*zip(self.momentum.encoder.parameters(), self.encoder.parameters(), strict=True),
                *zip(self.momentum.head.parameters(), self.head.parameters(), strict=True)]

    @torch.no_grad()
    def follow(self) -> None:
        """Move the copy towards the trained weights, xi <- m xi + (1 - m) theta, with m of this move
        (:meth:`momentum_at`)."""
        m = self.momentum_at(self.momentum.updates)
        for xi, theta in self._pairs():
            xi.mul_(m).add_(theta.detach(), alpha=1.0 - m)
        self.momentum.updates += 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (N, F)
        z = self.head(h)  # (N, D)
        keys = self.momentum(x)  # (N, D), no gradient
        return h, torch.cat([z, keys.to(z.dtype)], dim=1)  # (N, 2D)
