"""The hot loop never reads a value back from the device (issue 8: no host synchronisation per step).

The meta device has shapes but no values: any ``.item()``, ``bool(tensor)``, ``nonzero`` or ``bincount`` on it
raises. A step that runs end to end on meta tensors therefore reads nothing back from its device, which on a GPU
means it never waits for the GPU. The trainer's step on an accelerator is: BatchAugment (parameters drawn on the CPU
from a CPU generator), forward, the objective, backward, the gradient norm and the finite flag, the optimiser step.
"""
from __future__ import annotations

import math

import pytest
import torch

import reference_losses as ref
from contrastkit import NTXentLoss, SupConLoss, build_model
from contrastkit.augment import BatchAugment
from contrastkit.config import PretrainConfig
from contrastkit.train.objective import build_objective
from contrastkit.train.optim import build_optimizer
from contrastkit.train.trainer import _train_step

META = torch.device("meta")


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


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
@pytest.mark.parametrize("extra", [{}, {"n_views": 3}, {"temperature": 0.05}, {"l2_normalize": False},
                                   {"method": "supcon"}, {"method": "supcon", "supcon_variant": "in"}])
def test_a_training_step_reads_nothing_from_the_device(optimizer, extra):
    cfg = PretrainConfig(**{"method": "simclr", "precision": "fp32", "optimizer": optimizer, **extra})
    model = build_model("resnet18", cifar_stem=True, width=0.25).to(META)
    objective = build_objective(cfg)
    if optimizer == "sgd":  # fused SGD has no meta kernel; the foreach path is what runs where fused is missing
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    else:
        opt = build_optimizer(model, "lars", 0.1, 0.9, 1e-6)
    views = torch.empty(16, cfg.n_views, 3, 32, 32, device=META)
    labels = torch.empty(16, dtype=torch.long, device=META) if cfg.method == "supcon" else None
    loss = _train_step(model, objective, views, labels, cfg, META, channels_last=True)
    params = list(model.parameters())
    gnorm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
    finite = torch.isfinite(loss) & torch.isfinite(gnorm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    assert loss.device == META and finite.device == META and all(p.device == META for p in params)


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


@pytest.mark.parametrize("tau", [0.0436, 0.05, 0.2])
def test_ntxent_without_the_finite_check_is_sync_free_and_exact_in_the_worst_case(tau):
    """tau >= 0.0435: no row's sum can underflow, so the tiles skip that check; the worst case (every candidate
    antipodal to the anchor, the smallest terms possible) still equals the float64 reference."""
    z = torch.empty(6, 4, device=META, requires_grad=True)
    NTXentLoss(tau, check_values=False)(z[:3], z[3:]).backward()  # runs on meta: no device read
    e0 = torch.tensor([1.0, 0.0, 0.0])
    z1 = torch.stack([e0, -e0, -e0])
    z2 = torch.stack([-e0, -e0, -e0])
    got = NTXentLoss(tau, check_values=False)(z1, z2)
    assert math.isfinite(got.item())
    assert got.item() == pytest.approx(ref.ntxent_loop(z1, z2, tau), rel=1e-5)


def test_below_the_bound_or_checked_the_loss_reads_the_device():
    """tau < 0.0435 (a row may underflow) and check_values=True (labels' range, positives) read the device."""
    z = torch.empty(6, 4, device=META)
    labels = torch.zeros(3, dtype=torch.long, device=META)
    with pytest.raises((RuntimeError, NotImplementedError)):
        NTXentLoss(0.04, check_values=False)(z[:3], z[3:])
    with pytest.raises((RuntimeError, NotImplementedError)):
        SupConLoss(0.1)(z.view(3, 2, 4), labels)


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
