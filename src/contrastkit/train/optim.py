"""Optimisers and learning-rate schedule (SimCLR Sec. 2.2 and App. B.1).

- :class:`LARS`: layer-wise adaptive rate scaling (You et al. 2017), SimCLR's optimiser.
  Parameters in groups with ``lars_exclude=True`` (biases, norm layers) get plain
  momentum SGD without the trust ratio and without weight decay, as SimCLR does. Like fused SGD it takes
  ``torch.amp.GradScaler``'s ``grad_scale`` / ``found_inf`` and skips a step on the device.
- :func:`param_groups`: biases and normalisation parameters get no weight decay.
- :func:`scaled_lr`: ``linear`` (lr x B/256; SimCLR uses 0.3 x B/256 with LARS) or ``sqrt``
  (lr x sqrt(B); SimCLR App. B.1 recommends 0.075 x sqrt(B) for small batches / long runs).
- :func:`warmup_cosine`: linear warm-up then cosine decay, evaluated per optimiser step.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

__all__ = ["LARS", "param_groups", "scaled_lr", "warmup_cosine", "build_optimizer", "WarmupCosine"]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters: weights of conv/linear layers decay; biases and norm parameters do not.

    Returns:
        Two groups; the second carries ``weight_decay=0`` and ``lars_exclude=True``.
    """
    decay, no_decay = [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, _NORM_TYPES) or name.endswith("bias") or p.ndim <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


class LARS(torch.optim.Optimizer):
    """LARS: SGD with momentum where each layer's step is scaled by a trust ratio.

    update = lr * trust * (g + wd * w), trust = eta * ||w|| / ||g + wd * w|| (1 when a norm is 0);
    groups with ``lars_exclude=True`` skip the trust ratio.

    Args:
        params: parameters or groups (see :func:`param_groups`).
        lr: learning rate.
        momentum: momentum (0.9, SimCLR).
        weight_decay: weight decay (1e-6, SimCLR).
        eta: trust coefficient (0.001, You et al. 2017).
        foreach: update each group with multi-tensor (``torch._foreach_*``) kernels, or (False) one parameter at
            a time; None (default) picks multi-tensor on CUDA, where it launches ~20x fewer kernels, and the loop
            elsewhere, where it is as fast or faster (benchmarks/optim_bench.py), as ``torch.optim`` does. The two
            agree to rounding (the norms' summation order).

    The step reads ``self.grad_scale`` and ``self.found_inf`` when set (``torch.amp.GradScaler``'s protocol for
    optimisers with ``_step_supports_amp_scaling``, also used by ``--on-nonfinite skip``): gradients are divided by
    ``grad_scale``, and where ``found_inf`` is non-zero the parameters and momentum buffers stay as they were,
    decided on the device.
    """

    _step_supports_amp_scaling = True

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001, foreach: bool | None = None) -> None:
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                                      lars_exclude=False))
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        keep = None if found_inf is None else found_inf == 0  # () bool on the device
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            foreach = self.foreach if self.foreach is not None else all(p.is_cuda for p in params)
            if foreach and keep is None:
                self._group_foreach(group, params, grad_scale)
            else:
                self._group_loop(group, params, grad_scale, keep)
        return loss

    def _group_loop(self, group: dict, params: list[torch.Tensor], grad_scale: torch.Tensor | None = None,
                    keep: torch.Tensor | None = None) -> None:
        """One parameter at a time (about eight kernels each); ``keep`` False leaves everything as it was."""
        for p in params:
            g = p.grad if grad_scale is None else p.grad / grad_scale
            if group["weight_decay"]:
                g = g.add(p, alpha=group["weight_decay"])
            if not group["lars_exclude"]:
                w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                g = g.mul(_trust(w_norm, g_norm, group["eta"]))
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if keep is not None:  # a step that may be skipped: select on the device
                if buf is None:
                    buf = state["momentum_buffer"] = torch.zeros_like(p)
                buf.copy_(torch.where(keep, buf * group["momentum"] + g, buf))
                p.add_(torch.where(keep, buf, 0.0), alpha=-group["lr"])
                continue
            if buf is None:
                buf = state["momentum_buffer"] = torch.clone(g).detach()
            else:
                buf.mul_(group["momentum"]).add_(g)
            p.add_(buf, alpha=-group["lr"])

    def _group_foreach(self, group: dict, params: list[torch.Tensor], grad_scale: torch.Tensor | None = None
                       ) -> None:
        """The same update as :meth:`_group_loop` with multi-tensor kernels: a few launches per group, not per
        parameter (on a GPU, a ResNet's 60-odd parameters otherwise cost hundreds of small kernel launches)."""
        grads = [p.grad for p in params]
        if grad_scale is not None:
            grads = torch._foreach_div(grads, grad_scale)
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        if not group["lars_exclude"]:
            w_norms = torch.stack(torch._foreach_norm(params))  # (P,)
            g_norms = torch.stack(torch._foreach_norm(grads))  # (P,)
            trust = _trust(w_norms, g_norms, group["eta"])  # (P,)
            grads = torch._foreach_mul(grads, list(trust.unbind()))
        bufs = [self.state[p].get("momentum_buffer") for p in params]
        old = [i for i, b in enumerate(bufs) if b is not None]
        new = [i for i, b in enumerate(bufs) if b is None]
        if old:
            old_bufs = [bufs[i] for i in old]
            torch._foreach_mul_(old_bufs, group["momentum"])
            torch._foreach_add_(old_bufs, [grads[i] for i in old])
        if new:  # a first step (for these parameters): the buffer starts as the update, one multi-tensor copy
            created = [torch.empty_like(grads[i], memory_format=torch.preserve_format) for i in new]
            torch._foreach_copy_(created, [grads[i] for i in new])
            for i, buf in zip(new, created):
                bufs[i] = self.state[params[i]]["momentum_buffer"] = buf
        torch._foreach_add_(params, bufs, alpha=-group["lr"])


def _trust(w_norm: torch.Tensor, g_norm: torch.Tensor, eta: float) -> torch.Tensor:
    """eta * ||w|| / ||g||, or 1 where either norm is 0 (elementwise over stacked norms)."""
    return torch.where((w_norm > 0) & (g_norm > 0), eta * w_norm / g_norm, torch.ones_like(w_norm))


def scaled_lr(base_lr: float, batch_size: int, rule: str) -> float:
    """The peak learning rate for a batch size under a scaling rule (linear, sqrt or none)."""
    if rule == "linear":
        return base_lr * batch_size / 256.0
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size)
    if rule == "none":
        return base_lr
    raise ValueError(f"lr scaling must be linear, sqrt or none, got {rule!r}")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at ``step`` (0-based): linear warm-up, then cosine to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
                    ) -> torch.optim.Optimizer:
    """SGD (momentum; fused where available, else foreach) or LARS over :func:`param_groups`.

    The momentum buffers are created here, as zeros: a first step then computes ``0 * momentum + g = g``, what it
    would without a buffer, and a first step skipped on the device (``found_inf``) leaves defined buffers behind
    (fused SGD would otherwise leave the uninitialised memory it allocated for them).
    """
    groups = param_groups(model, weight_decay)
    if name == "lars":
        optimizer: torch.optim.Optimizer = LARS(groups, lr=lr, momentum=momentum)
    elif name == "sgd":
        for g in groups:
            g.pop("lars_exclude")
        try:  # one fused kernel per step where the build has it (CPU and CUDA in recent PyTorch)
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=True)
        except (RuntimeError, TypeError, ValueError):
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, foreach=True)
    else:
        raise ValueError(f"optimizer must be sgd or lars, got {name!r}")
    if momentum:
        for group in optimizer.param_groups:
            for p in group["params"]:
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return optimizer


class WarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """The learning rate of each step: linear warm-up, then cosine decay to ``min_ratio`` x the peak
    (:func:`warmup_cosine`), per optimiser step (SimCLR Sec. 2.2).

    With ``budget_s`` > 0 (``--schedule time``) progress is the training seconds spent over the budget, on a
    10,000-tick grid, instead of steps: the schedule then spans a time budget whatever the speed of the machine.
    The loop passes the seconds to :meth:`step`.

    Everything that resume and ``--resume --extend`` need is in :meth:`state_dict`: the step, the totals and the
    training seconds so far.

    Args:
        optimizer: the optimiser whose groups' ``initial_lr`` is the peak learning rate.
        total_steps: the steps of the whole run.
        warmup_steps: the warm-up steps.
        min_ratio: the final learning rate as a fraction of the peak.
        budget_s: the training seconds the schedule spans (0: it spans the steps).
        warmup_fraction: with ``budget_s``, the fraction of the budget spent warming up.
    """

    TICKS = 10_000

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_ratio: float = 0.0,
                 budget_s: float = 0.0, warmup_fraction: float = 0.0) -> None:
        self.total_steps, self.warmup_steps, self.min_ratio = int(total_steps), int(warmup_steps), float(min_ratio)
        self.budget_s, self.warmup_fraction = float(budget_s), float(warmup_fraction)
        self.train_time = 0.0
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        """The multiplier of the peak learning rate at ``step`` (or at the training seconds so far)."""
        if self.budget_s > 0:
            ticks = int(self.TICKS * min(1.0, self.train_time / self.budget_s))
            return warmup_cosine(ticks, self.TICKS, int(self.TICKS * self.warmup_fraction), self.min_ratio)
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.min_ratio)

    def progress(self) -> float:
        """How far the schedule is, in [0, 1]: the training seconds over the budget (``budget_s`` > 0), else the
        steps taken over ``total_steps``. A resolution schedule (``--size-schedule``) follows it."""
        if self.budget_s > 0:
            return min(1.0, self.train_time / self.budget_s)
        return min(1.0, max(0, self.last_epoch) / max(1, self.total_steps))

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def step(self, train_time: float | None = None) -> None:  # type: ignore[override]
        """Set the next step's learning rate; ``train_time``: the training seconds so far (``--schedule time``)."""
        if train_time is not None:
            self.train_time = float(train_time)
        super().step()

    def extend(self, total_steps: int, warmup_steps: int) -> None:
        """Span a new total of steps from the current one on (``--resume --extend``): the learning rate of the
        current step becomes the new schedule's."""
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.last_epoch -= 1
        super().step()  # recomputes the current step's rate under the new totals
