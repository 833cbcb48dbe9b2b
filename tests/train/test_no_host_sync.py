"""The hot loop never reads a value back from the device (issue 8: no host synchronisation per step).

The meta device has shapes but no values: any ``.item()``, ``bool(tensor)``, ``nonzero`` or ``bincount`` on it
raises. A step that runs end to end on meta tensors therefore reads nothing back from its device, which on a GPU
means it never waits for the GPU. The other way to wait is a blocking copy to the device (``torch.tensor(x,
device=cuda)``, ``cpu_tensor.to(cuda)`` without ``non_blocking``): PyTorch synchronises the stream after it, so
:class:`BlockingCopies` records every such copy to the meta device. The trainer's step on an accelerator is: BatchAugment (parameters drawn on the CPU
from a CPU generator), forward, the objective, backward, the gradient norm and the finite flag, the optimiser step.
"""
from __future__ import annotations

import dataclasses
import math
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import reference_losses as ref
from contrastkit import NTXentLoss, SupConLoss, build_model
from contrastkit.augment import BatchAugment
from contrastkit.config import PretrainConfig
from contrastkit.methods import DataInfo, get_method, with_method_defaults
from contrastkit.train.forward import forward_views
from contrastkit.train.nonfinite import NonFiniteGuard, first_nonfinite
from contrastkit.train.optim import LARS, param_groups
from contrastkit.train.precision import grad_scaler

META = torch.device("meta")


def build_objective(cfg: PretrainConfig):
    """The objective the run's method trains with."""
    cfg = with_method_defaults(dataclasses.replace(cfg, width=0.125))
    return get_method(cfg.method).build(cfg, DataInfo([0, 1, 2] * 4, ["a", "b", "c"], 16, "toy")).objective


def train_step(model, objective, views, labels, channels_last=True):
    """The training step's forward, loss and backward, as train_one_epoch runs them."""
    loss = objective(forward_views(model, views, channels_last), labels)
    loss.backward()
    return loss.detach()


def _lars(model, foreach: bool):
    """LARS on the meta device: the per-parameter loop (what CPUs run) or the multi-tensor path (what GPUs run)."""
    return LARS(param_groups(model, 1e-6), lr=0.1, momentum=0.9, foreach=foreach)


def _caller() -> str:
    frames = [f for f in traceback.extract_stack() if "contrastkit" in f.filename]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


class BlockingCopies:
    """Records host-to-device copies that block (each one a stream synchronisation on a GPU), with their caller.

    ``torch.tensor`` / ``torch.as_tensor`` of host data onto a device are seen as functions (the dispatcher does
    not see their copy); ``Tensor.to`` and ``copy_`` from a CPU tensor without ``non_blocking`` as aten ops.
    """

    _FACTORIES = ("tensor", "as_tensor", "asarray")

    def __init__(self) -> None:
        self.copies: list[str] = []
        outer = self

        class _Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                device = kwargs.get("device")
                if getattr(func, "__name__", "") in outer._FACTORIES and device is not None \
                        and torch.device(device).type != "cpu":
                    data = args[0] if args else kwargs.get("data")
                    if not (isinstance(data, torch.Tensor) and data.device.type != "cpu"):
                        outer.copies.append(f"torch.{func.__name__} at {_caller()}")
                return func(*args, **kwargs)

        class _Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                name = str(func)
                if name.startswith("aten._to_copy") and args[0].device.type == "cpu" \
                        and kwargs.get("device") is not None and kwargs["device"].type != "cpu" \
                        and not kwargs.get("non_blocking", False):
                    outer.copies.append(f"{name} at {_caller()}")
                elif name.startswith("aten.copy_") and args[1].device.type == "cpu" and args[0].device.type != "cpu" \
                        and not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False)):
                    outer.copies.append(f"{name} at {_caller()}")
                return func(*args, **kwargs)

        self._modes = (_Functions(), _Ops())

    def __enter__(self) -> "BlockingCopies":
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


def test_blocking_copies_are_recorded():
    """The control: each way of a blocking copy to the device is caught, the non-blocking one is not."""
    with BlockingCopies() as rec:
        torch.tensor(3, device=META)
        torch.as_tensor([0.5, 1.0], device=META)
        torch.ones(3).to(META)
        torch.empty(3, device=META).copy_(torch.ones(3))
        torch.ones(3).to(META, non_blocking=True)
        torch.where(torch.empty(3, device=META) > 0, 3, torch.empty(3, device=META))  # a scalar argument, no copy
    assert len(rec.copies) == 4, rec.copies


def test_first_nonfinite_keeps_the_step_on_the_device_without_a_copy():
    first = torch.tensor(-1)
    first = first_nonfinite(first, torch.tensor(True), 3)
    first = first_nonfinite(first, torch.tensor(False), 4)
    first = first_nonfinite(first, torch.tensor(False), 5)
    assert int(first) == 4
    with BlockingCopies() as rec:
        out = first_nonfinite(torch.empty((), dtype=torch.long, device=META), torch.empty((), dtype=torch.bool,
                                                                                          device=META), 7)
    assert out.device == META and out.dtype == torch.long and rec.copies == []


@pytest.mark.parametrize("preset,overrides", [
    ("cifar", {}), ("imagenet", {}), ("imagenet", {"crop": False, "rotate": 0.5, "cutout": 0.5, "solarize": 0.2}),
])
def test_batch_augment_makes_no_blocking_copy(preset, overrides):
    aug = BatchAugment.from_preset(preset, n_views=2, size=32, **overrides).to(META)
    images = torch.empty(16, 3, 40, 40, dtype=torch.uint8, device=META)
    with BlockingCopies() as rec:
        views = aug(images, generator=torch.Generator().manual_seed(0))
    assert views[0].device == META and rec.copies == []


def test_meta_catches_a_device_read():
    """The control: the losses' default finite check does read the device, and meta refuses it."""
    z = torch.empty(8, 4, device=META)
    with pytest.raises((RuntimeError, NotImplementedError)):
        NTXentLoss()(z, z)


def test_batch_augment_with_a_cpu_generator_reads_nothing_from_the_device():
    aug = BatchAugment.from_preset("cifar", n_views=2)
    images = torch.empty(8, 3, 32, 32, dtype=torch.uint8, device=META)
    views = aug(images, generator=torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(8, 3, 32, 32)] * 2 and views[0].device == META


@pytest.mark.parametrize("optimizer", ["sgd", "lars", "lars-foreach"])
@pytest.mark.parametrize("extra", [{}, {"n_views": 3}, {"temperature": 0.05}, {"temperature": 0.02},
                                   {"method": "supcon", "temperature": 0.02},
                                   {"method": "supcon", "supcon_variant": "in", "temperature": 0.02},
                                   {"method": "supcon", "supcon_variant": "in", "l2_normalize": False},
                                   {"l2_normalize": False},
                                   {"method": "supcon"}, {"method": "supcon", "supcon_variant": "in"},
                                   {"loss": "ntlogistic", "semi_hard": True}, {"loss": "margin", "semi_hard": True},
                                   {"loss": "margin"}, {"loss": "npair"}])
def test_a_training_step_reads_nothing_from_the_device(optimizer, extra):
    cfg = PretrainConfig(**{"method": "simclr", "precision": "fp32", "optimizer": optimizer, **extra})
    model = build_model("resnet18", cifar_stem=True, width=0.25).to(META)
    objective = build_objective(cfg)
    if optimizer == "sgd":  # fused SGD has no meta kernel; the foreach path is what runs where fused is missing
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    else:
        opt = _lars(model, foreach=optimizer == "lars-foreach")
    views = torch.empty(16, cfg.n_views, 3, 32, 32, device=META)
    labels = torch.empty(16, dtype=torch.long, device=META) if cfg.method == "supcon" else None
    with BlockingCopies() as rec:
        loss = train_step(model, objective, views, labels)
        params = list(model.parameters())
        gnorm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        finite = torch.isfinite(loss) & torch.isfinite(gnorm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert loss.device == META and finite.device == META and all(p.device == META for p in params)
    assert rec.copies == []


@pytest.mark.parametrize("foreach", [False, True])
def test_a_skip_mode_step_reads_nothing_from_the_device(foreach, tmp_path):
    """--on-nonfinite skip: the guard's flag, the optimiser's ``found_inf`` step, the buffers' selection and the
    count, all on the device. (Fused SGD takes ``found_inf`` inside its kernel, which has no meta version.)"""
    cfg = PretrainConfig(method="simclr", precision="fp32", optimizer="lars", on_nonfinite="skip")
    model = build_model("resnet18", cifar_stem=True, width=0.25).to(META)
    opt = _lars(model, foreach=foreach)
    guard = NonFiniteGuard("skip", model, opt, grad_scaler(META, "fp32"), META, tmp_path / "last.pt")
    objective = build_objective(cfg)
    with BlockingCopies() as rec:
        for step in range(2):
            loss = train_step(model, objective, torch.empty(16, 2, 3, 32, 32, device=META), None)
            finite = guard.check(loss, step, 0)
            guard.scaler.step(opt)
            guard.scaler.update()
            guard.after_step()
            opt.zero_grad(set_to_none=True)
    assert finite.device == META and guard.skipped.device == META and rec.copies == []


@pytest.mark.parametrize("method, loss", [("simclr", "ntxent"), ("simclr", "ntlogistic"), ("simclr", "margin"),
                                          ("simclr", "npair"), ("supcon", "ntxent"), ("ce", "ntxent")])
def test_objective_turns_non_finite_embeddings_into_a_nan_loss(method, loss):
    """No ValueError from the loss inside training: a NaN loss, which the trainer's guard stops or skips."""
    objective = build_objective(PretrainConfig(method=method, loss=loss))
    out = torch.randn(6, 2, 10, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    good = objective(out, labels)
    assert torch.isfinite(good)
    bad_out = out.detach().clone()
    bad_out[2, 1, 3] = float("nan")
    bad_out.requires_grad_(True)
    bad = objective(bad_out, labels)
    assert torch.isnan(bad)
    bad.backward()  # backward runs; the trainer then sees the NaN loss
    assert bad_out.grad is not None


@pytest.mark.parametrize("tau", [0.01, 0.03, 0.0436, 0.05, 0.2])
def test_ntxent_without_the_finite_check_is_sync_free_and_exact_in_the_worst_case(tau):
    """tau >= 0.0435: no row's sum can underflow, so the tiles skip that check; below, unchecked L_out shifts each
    row by its max (its largest term is then 1). The worst case (every candidate antipodal to the anchor, the
    smallest terms possible) still equals the float64 reference."""
    z = torch.empty(6, 4, device=META, requires_grad=True)
    NTXentLoss(tau, check_values=False)(z[:3], z[3:]).backward()  # runs on meta: no device read
    e0 = torch.tensor([1.0, 0.0, 0.0])
    z1 = torch.stack([e0, -e0, -e0])
    z2 = torch.stack([-e0, -e0, -e0])
    got = NTXentLoss(tau, check_values=False)(z1, z2)
    assert math.isfinite(got.item())
    assert got.item() == pytest.approx(ref.ntxent_loop(z1, z2, tau), rel=1e-5)


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("normalize", [True, False])
def test_below_the_bound_only_the_checked_loss_reads_the_device(variant, normalize):
    """tau < 0.0435 (or no l2 normalisation): the checked loss searches the tiles for underflowing rows, reading the
    device; the unchecked one reads nothing, L_in included."""
    z = torch.empty(6, 4, device=META, requires_grad=True)
    labels = torch.zeros(3, dtype=torch.long, device=META)
    loss = SupConLoss(0.04, variant, check_values=False, normalize=normalize)(z.view(3, 2, 4), labels)
    loss.backward()
    assert loss.device == META and z.grad.shape == z.shape
    with pytest.raises((RuntimeError, NotImplementedError)):
        SupConLoss(0.04, variant, normalize=normalize)(z.detach().view(3, 2, 4), labels)


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("V", [1, 2])
def test_labelled_supcon_unchecked_reads_nothing_from_the_device(variant, V):
    z = torch.empty(6, V, 4, device=META, requires_grad=True)
    labels = torch.empty(6, dtype=torch.long, device=META)
    loss = SupConLoss(0.1, variant, check_values=False)(z, labels)
    loss.backward()
    assert loss.device == META and z.grad.shape == z.shape
    if V > 1:
        assert SupConLoss(0.1, check_values=False)(z.detach()).device == META  # labels None too


def test_check_values_false_keeps_the_other_checks_and_gives_nan_for_nan_inputs():
    loss = NTXentLoss(check_values=False)
    assert "check_values=False" in repr(loss)
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(TypeError, match="check_values must be True or False"):
        NTXentLoss(check_values=1)
    z = torch.randn(4, 3)
    z[1, 0] = float("inf")
    assert torch.isnan(loss(z, torch.randn(4, 3)))
    with pytest.raises(ValueError, match="must be finite"):
        NTXentLoss()(z, torch.randn(4, 3))
