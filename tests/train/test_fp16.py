"""fp16 trains with loss scaling (torch.amp.GradScaler): without it, small gradients underflow to zero."""
from __future__ import annotations

import json

import pytest
import torch

import contrastkit.train.nonfinite as nonfinite
from conftest import TINY, wrap_objective
from contrastkit import build_model
from contrastkit.cli import main
from contrastkit.config import PretrainConfig
from contrastkit.methods.simclr import simclr_objective
from contrastkit.models import load_checkpoint, save_checkpoint
from contrastkit.train.forward import forward_views
from contrastkit.train.gradcache import cached_backward
from contrastkit.train.precision import autocast, cpu_has_fast_bf16, grad_scaler, resolve_precision

CPU = torch.device("cpu")


def _grads(precision: str, scaled: bool, factor: float, micro_batch: int = 0) -> torch.Tensor:
    """The gradient of ``factor`` x NT-Xent as the training step computes it (plain or gradient caching)."""
    torch.manual_seed(0)
    model = build_model("resnet18", cifar_stem=True, width=0.125)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    objective = simclr_objective(PretrainConfig(temperature=0.5))
    scaler = grad_scaler(CPU, precision if scaled else "fp32")
    views = torch.rand(8, 2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    scaled_objective = lambda out, labels: objective(out, labels) * factor  # noqa: E731
    cast = lambda: autocast(CPU, precision)  # noqa: E731
    if micro_batch:
        cached_backward(model, scaled_objective, views, None, micro_batch, cast, scale=scaler.scale)
    else:
        scaler.scale(scaled_objective(forward_views(model, views, autocast=cast), None)).backward()
    scaler.unscale_(optimizer)
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _assert_scaling_keeps_what_fp16_loses(ref: torch.Tensor, unscaled: torch.Tensor, scaled: torch.Tensor) -> None:
    """Unscaled fp16 flushes over 10% of the non-zero gradient entries to zero and is over 50% off; with loss
    scaling, at least 99% of those entries survive, at most 0.1% of all non-zero entries are lost and they carry at
    most 0.1% of the gradient's norm, and the error is fp16 rounding (< 10%).

    Bounds, not exact counts: which few entries round to zero depends on the CPU's instruction set (AVX-512/AMX or
    AVX2 kernels round differently).
    """
    nonzero = ref != 0
    lost_unscaled, lost_scaled = (unscaled == 0) & nonzero, (scaled == 0) & nonzero
    assert int(lost_unscaled.sum()) > 0.1 * int(nonzero.sum())
    assert float((unscaled - ref).norm() / ref.norm()) > 0.5
    assert int((lost_unscaled & ~lost_scaled).sum()) >= 0.99 * int(lost_unscaled.sum())
    assert int(lost_scaled.sum()) <= 1e-3 * int(nonzero.sum())
    assert float(ref[lost_scaled].norm()) <= 1e-3 * float(ref.norm())
    assert float((scaled - ref).norm() / ref.norm()) < 0.1


def test_loss_scaling_keeps_the_gradients_that_fp16_loses():
    """A loss of ~1e-5 (the regime of late training or small tau-scaled terms): unscaled fp16 flushes over 10% of
    the gradient entries to zero and is 90% off; scaled, nearly none is lost and the error is fp16 rounding."""
    ref = _grads("fp32", False, 1e-5)
    _assert_scaling_keeps_what_fp16_loses(ref, _grads("fp16", False, 1e-5), _grads("fp16", True, 1e-5))


def test_gradient_caching_scales_too():
    ref = _grads("fp32", False, 1e-5, micro_batch=4)  # BatchNorm per micro-batch: compare like with like
    _assert_scaling_keeps_what_fp16_loses(ref, _grads("fp16", False, 1e-5, micro_batch=4),
                                          _grads("fp16", True, 1e-5, micro_batch=4))


def test_auto_precision_and_the_scaler(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision(cuda, "auto") == "fp16"  # a V100 or T4: fp16 with loss scaling
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision(cuda, "auto") == "bf16"
    cpu_auto = "bf16" if cpu_has_fast_bf16() else "fp32"  # tests/train/test_precision_auto.py: the CPU's choice
    assert resolve_precision(CPU, "auto") == cpu_auto and resolve_precision(CPU, "fp16") == "fp16"
    assert grad_scaler(CPU, "fp16").is_enabled()
    assert not grad_scaler(CPU, "bf16").is_enabled() and not grad_scaler(CPU, "auto").is_enabled()


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
def test_fp16_run_checkpoints_and_resumes_its_loss_scale(tmp_path, image_folder, capsys, optimizer):
    common = ["pretrain", "--method", "simclr", "--data", str(image_folder), "--epochs", "2", *TINY,
              "--knn-every", "0", "--device", "cpu", "--precision", "fp16", "--optimizer", optimizer]
    out = tmp_path / "run"
    assert main([*common, "--out", str(out), "--max-steps", "4"]) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "fp16" and summary["grad_scale"] == 65536.0  # no overflow in 4 steps
    state = load_checkpoint(out / "last.pt")
    assert state["scaler"]["scale"] == 65536.0
    state["scaler"]["scale"] = 1024.0  # as if overflows had lowered it: the resumed run must go on from there
    save_checkpoint(state, out / "last.pt")
    assert main([*common, "--out", str(out), "--resume", "--max-steps", "0"]) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 6 and summary["grad_scale"] == 1024.0
    assert all(torch.isfinite(v).all() for v in load_checkpoint(out / "last.pt")["model"].values()
               if v.is_floating_point())


def _inf_gradient_at(monkeypatch, step: int) -> None:
    """An fp16 overflow at ``step``: one gradient entry is inf after the (scaled) backward, before the check."""
    real, calls = nonfinite.NonFiniteGuard.check, []

    def check(self, loss, *args):
        calls.append(1)
        if len(calls) - 1 == step:
            grad = next(p for p in self.params if p.grad is not None).grad
            grad[(0,) * grad.ndim] = float("inf")
        return real(self, loss, *args)

    monkeypatch.setattr(nonfinite.NonFiniteGuard, "check", check)


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
def test_an_overflowing_fp16_step_is_skipped_and_halves_the_scale(tmp_path, image_folder, capsys, monkeypatch,
                                                                  optimizer):
    """Step 1 overflows: the parameters (and the momentum) after steps 0-1 are those after step 0 alone, and the
    scale is halved. Fused SGD and LARS both take the scaler's ``found_inf`` and skip the step on the device."""
    common = ["pretrain", "--method", "simclr", "--data", str(image_folder), "--epochs", "1", *TINY,
              "--batch-size", "6", "--knn-every", "0", "--device", "cpu", "--precision", "fp16",
              "--optimizer", optimizer]
    assert main([*common, "--out", str(tmp_path / "one"), "--max-steps", "1"]) == 0, capsys.readouterr().err
    _inf_gradient_at(monkeypatch, 1)
    assert main([*common, "--out", str(tmp_path / "two"), "--max-steps", "2"]) == 0, capsys.readouterr().err
    one, two = (load_checkpoint(tmp_path / name / "last.pt") for name in ("one", "two"))
    assert two["global_step"] == 2 and two["scaler"]["scale"] == 32768.0 and one["scaler"]["scale"] == 65536.0
    model = build_model("resnet18", cifar_stem=True, width=0.125)
    for name, _ in model.named_parameters():
        assert torch.equal(one["model"][name], two["model"][name]), name
    for a, b in zip(one["optimizer"]["state"].values(), two["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["skipped_nonfinite_steps"] == 0  # an overflow is the scaler's, not the guard's


def test_fp16_lars_step_reads_nothing_back():
    """The sequence the trainer runs for fp16 with LARS (unscale_, norm, scaler.step, update) reads no value back:
    LARS takes the scaler's ``found_inf`` on the device. An optimiser that cannot (foreach SGD) makes scaler.step
    read the flag back: the control."""
    from contrastkit.train.optim import LARS, param_groups

    reads = []
    names = ("item", "tolist", "__bool__", "__int__", "__float__")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def run(lars: bool) -> int:
        torch.manual_seed(0)
        model = build_model("resnet18", cifar_stem=True, width=0.125)
        opt = LARS(param_groups(model, 1e-6), lr=0.1, momentum=0.9) if lars else \
            torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
        scaler = grad_scaler(CPU, "fp16")
        x = torch.rand(4, 3, 16, 16)
        for name in names:
            setattr(torch.Tensor, name, (lambda m: lambda *a, **k: reads.append(1) or m(*a, **k))(saved[name]))
        try:
            reads.clear()
            with torch.autocast("cpu", dtype=torch.float16):
                _, z = model(x)
            scaler.scale(z.float().square().mean()).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            scaler.step(opt)
            scaler.update()
            return len(reads)
        finally:
            for name, method in saved.items():
                setattr(torch.Tensor, name, method)

    assert run(lars=False) >= 1  # the control
    assert run(lars=True) == 0


def test_fp16_lars_skip_mode_undoes_a_nan_loss_step(tmp_path, image_folder, capsys, monkeypatch):
    """Skip mode and the fp16 scaler together: a NaN loss at step 1 is counted as skipped and leaves the model
    (BatchNorm statistics included) and the momentum as after step 0."""
    calls = []

    class NaNAtStep1(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, outputs, labels):
            calls.append(1)
            loss = self.inner(outputs, labels)
            return loss * float("nan") if len(calls) == 2 else loss

    common = ["pretrain", "--method", "simclr", "--data", str(image_folder), "--epochs", "1", *TINY,
              "--batch-size", "6", "--knn-every", "0", "--device", "cpu", "--precision", "fp16",
              "--optimizer", "lars", "--on-nonfinite", "skip"]
    assert main([*common, "--out", str(tmp_path / "one"), "--max-steps", "1"]) == 0, capsys.readouterr().err
    wrap_objective(monkeypatch, NaNAtStep1)
    assert main([*common, "--out", str(tmp_path / "two"), "--max-steps", "2"]) == 0, capsys.readouterr().err
    one, two = (load_checkpoint(tmp_path / name / "last.pt") for name in ("one", "two"))
    for key, value in one["model"].items():
        assert torch.equal(value, two["model"][key]), key
    for a, b in zip(one["optimizer"]["state"].values(), two["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["skipped_nonfinite_steps"] == 1
