"""fp16 trains with loss scaling (torch.amp.GradScaler): without it, small gradients underflow to zero."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY
from contrastkit import build_model
from contrastkit.cli import main
from contrastkit.config import PretrainConfig
from contrastkit.train.checkpoint import load_checkpoint, save_checkpoint
from contrastkit.train.objective import build_objective
from contrastkit.train.precision import cpu_has_fast_bf16, grad_scaler, resolve_precision
from contrastkit.train.trainer import train_step as _train_step

CPU = torch.device("cpu")


def _grads(precision: str, scaled: bool, factor: float, micro_batch: int = 0) -> torch.Tensor:
    torch.manual_seed(0)
    model = build_model("resnet18", cifar_stem=True, width=0.125)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = PretrainConfig(precision=precision, temperature=0.5, micro_batch_size=micro_batch)
    objective = build_objective(cfg)
    scaler = grad_scaler(CPU, precision) if scaled else None
    views = torch.rand(8, 2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    _train_step(model, lambda out, labels: objective(out, labels) * factor, views, None, cfg, CPU, False, scaler)
    if scaler is not None:
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
    assert isinstance(grad_scaler(CPU, "fp16"), torch.amp.GradScaler)
    assert grad_scaler(CPU, "bf16") is None and grad_scaler(CPU, "auto") is None


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
    assert main([*common, "--out", str(out), "--resume"]) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 6 and summary["grad_scale"] == 1024.0
    assert all(torch.isfinite(v).all() for v in load_checkpoint(out / "last.pt")["model"].values()
               if v.is_floating_point())


def _inf_gradient_at(monkeypatch, step: int) -> None:
    """An fp16 overflow at ``step``: one gradient entry is inf after the (scaled) backward."""
    import contrastkit.train.trainer as trainer

    real, calls = trainer.train_step, []

    def train_step(model, *args):
        loss = real(model, *args)
        calls.append(1)
        if len(calls) - 1 == step:
            grad = next(p for p in model.parameters() if p.grad is not None).grad
            grad[(0,) * grad.ndim] = float("inf")
        return loss

    monkeypatch.setattr(trainer, "train_step", train_step)


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
def test_an_overflowing_fp16_step_is_skipped_and_halves_the_scale(tmp_path, image_folder, capsys, monkeypatch,
                                                                  optimizer):
    """Step 1 overflows: the parameters (and LARS's momentum) after steps 0-1 are those after step 0 alone, and the
    scale is halved. Fused SGD skips inside its kernel; LARS's step is undone on the device (scaler.step would read
    the flag back)."""
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
    """The sequence the trainer runs for fp16 with LARS (unscale_, norm, step, update, undo on the device) reads no
    value back; GradScaler.step with LARS does (it tests the overflow flag on the host)."""
    from contrastkit.train.optim import LARS, param_groups
    from contrastkit.train.rollback import Rollback

    reads = []
    names = ("item", "tolist", "__bool__", "__int__", "__float__")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def run(use_scaler_step: bool) -> int:
        torch.manual_seed(0)
        model = build_model("resnet18", cifar_stem=True, width=0.125)
        opt = LARS(param_groups(model, 1e-6), lr=0.1, momentum=0.9)
        scaler, rollback = grad_scaler(CPU, "fp16"), Rollback(model, opt)
        x = torch.rand(4, 3, 16, 16)
        for name in names:
            setattr(torch.Tensor, name, (lambda m: lambda *a, **k: reads.append(1) or m(*a, **k))(saved[name]))
        try:
            reads.clear()
            rollback.save()
            with torch.autocast("cpu", dtype=torch.float16):
                _, z = model(x)
            scaler.scale(z.float().square().mean()).backward()
            scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            if use_scaler_step:
                scaler.step(opt)
            else:
                opt.step()
            scaler.update()
            if not use_scaler_step:
                rollback.undo_where(~torch.isfinite(gnorm))
            return len(reads)
        finally:
            for name, method in saved.items():
                setattr(torch.Tensor, name, method)

    assert run(use_scaler_step=True) >= 1  # the control
    assert run(use_scaler_step=False) == 0


def test_fp16_lars_skip_mode_undoes_a_nan_loss_step(tmp_path, image_folder, capsys, monkeypatch):
    """Skip mode and the overflow undo together: a NaN loss at step 1 is counted as skipped and leaves the model
    (BatchNorm statistics included) and the momentum as after step 0."""
    import contrastkit.train.run as run

    real, calls = run.build_objective, []

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
    monkeypatch.setattr(run, "build_objective", lambda cfg: NaNAtStep1(real(cfg)))
    assert main([*common, "--out", str(tmp_path / "two"), "--max-steps", "2"]) == 0, capsys.readouterr().err
    one, two = (load_checkpoint(tmp_path / name / "last.pt") for name in ("one", "two"))
    for key, value in one["model"].items():
        assert torch.equal(value, two["model"][key]), key
    for a, b in zip(one["optimizer"]["state"].values(), two["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["skipped_nonfinite_steps"] == 1
