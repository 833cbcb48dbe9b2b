"""Rollback: ``--on-nonfinite skip`` undoes a non-finite step on the device, bit for bit, without reading it."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from contrastkit import build_model
from contrastkit.train.optim import LARS, build_optimizer, param_groups
from contrastkit.train.rollback import Rollback


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def _batch(seed: int) -> torch.Tensor:
    return torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _step(model, optimizer, x, rollback=None, nan=False) -> torch.Tensor:
    if rollback is not None:
        rollback.save()
    loss = model(x).square().mean()
    if nan:
        loss = loss * float("nan")
    loss.backward()
    finite = torch.isfinite(loss)
    optimizer.step()
    if rollback is not None:
        rollback.undo_where(~finite)
    optimizer.zero_grad(set_to_none=True)
    return finite


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            _assert_same(a[k], b[k])
        elif isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


OPTIMIZERS = ["sgd", "lars", "lars-foreach", "lars-channels-last"]


def _optimizer(model: nn.Module, name: str) -> torch.optim.Optimizer:
    """sgd, lars (the per-parameter loop CPUs run), lars-foreach (the multi-tensor path GPUs run), and
    lars-channels-last (multi-tensor, on a channels-last model: the flat snapshot copies strided tensors)."""
    opt = build_optimizer(model, name.split("-")[0], 0.1, 0.9, 1e-4)
    if name.startswith("lars-"):
        opt.foreach = True
    return opt


def _twins(name: str):
    """Two identical models with their optimisers, and a Rollback for the first."""
    model, twin = _model(), _model()
    if name.endswith("channels-last"):
        model, twin = (m.to(memory_format=torch.channels_last) for m in (model, twin))
    opt, twin_opt = _optimizer(model, name), _optimizer(twin, name)
    return model, opt, twin, twin_opt, Rollback(model, opt)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_non_finite_step_is_undone_bit_for_bit(name):
    model, opt, twin, twin_opt, rollback = _twins(name)
    _step(model, opt, _batch(1), rollback)
    before_model, before_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    assert not bool(_step(model, opt, _batch(2), rollback, nan=True))
    _assert_same(model.state_dict(), before_model)  # parameters and BatchNorm statistics (num_batches_tracked too)
    _assert_same(opt.state_dict(), before_opt)  # momentum buffers
    # a finite step after the skipped one goes on as if the skipped one had never run
    _step(twin, twin_opt, _batch(1))
    _step(model, opt, _batch(3), rollback)
    _step(twin, twin_opt, _batch(3))
    _assert_same(model.state_dict(), twin.state_dict())
    _assert_same(opt.state_dict(), twin_opt.state_dict())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_finite_steps_are_those_of_the_plain_loop(name):
    model, opt, twin, twin_opt, rollback = _twins(name)
    for seed in range(3):
        assert bool(_step(model, opt, _batch(seed), rollback))
        _step(twin, twin_opt, _batch(seed))
    _assert_same(model.state_dict(), twin.state_dict())
    _assert_same(opt.state_dict(), twin_opt.state_dict())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_skipped_first_step_leaves_zero_momentum_and_the_next_step_is_a_first_step(name):
    model, opt, twin, twin_opt, rollback = _twins(name)
    _step(model, opt, _batch(1), rollback, nan=True)  # creates the momentum buffers, then undoes the step
    buffers = [s["momentum_buffer"] for s in opt.state.values()]
    assert buffers and all(torch.equal(b, torch.zeros_like(b)) for b in buffers)
    _assert_same(model.state_dict(), twin.state_dict())
    _step(model, opt, _batch(2), rollback)
    _step(twin, twin_opt, _batch(2))  # the twin's true first step
    _assert_same(model.state_dict(), twin.state_dict())
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], twin_opt.state[q]["momentum_buffer"])


def test_undo_before_save_is_an_error():
    model = _model()
    rollback = Rollback(model, build_optimizer(model, "sgd", 0.1, 0.9, 0.0))
    with pytest.raises(RuntimeError, match="before Rollback.save"):
        rollback.undo_where(torch.tensor(True))


class _OpCounter(TorchDispatchMode):
    """Counts the device operations (non-view aten ops other than allocations), each a kernel launch on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and not str(func).startswith(("aten.empty", "profiler.")):
            self.ops += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("foreach", [True, False])
def test_a_resnet18_snapshot_and_undo_are_a_few_operations_not_a_few_per_tensor(foreach):
    """~190 tensors (65 parameters, 63 buffers, 65 momentum buffers): one operation or more per tensor was ~580
    per step. The flat snapshot takes one multi-tensor copy per (device, dtype) to save, three to undo."""
    meta = torch.device("meta")
    model = build_model("resnet18", cifar_stem=True).to(meta)
    opt = LARS(param_groups(model, 1e-6), lr=0.1, momentum=0.9, foreach=foreach)
    rollback = Rollback(model, opt)
    tensors = len(list(model.parameters())) * 2 + len(list(model.buffers()))
    for step in range(2):  # the first step creates the momentum buffers, the second has them to save
        for p in model.parameters():
            p.grad = torch.empty_like(p)
        with _OpCounter() as save:
            rollback.save()
        with _OpCounter() as lars:
            opt.step()
        with _OpCounter() as undo:
            rollback.undo_where(torch.empty((), dtype=torch.bool, device=meta))
        assert save.ops <= 2 and undo.ops <= 2 * 3 + (2 * 3 if step == 0 else 0), (save.ops, undo.ops)
        if foreach:  # the multi-tensor LARS: a few operations per group, the first step included
            assert lars.ops <= 2 * 12, lars.ops
        else:  # the control: the per-parameter loop CPUs run
            assert lars.ops >= tensors // 2
    assert tensors > 180
