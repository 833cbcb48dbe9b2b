"""Non-finite guard (issue 6): a NaN/inf loss or gradient stops the run with the step, the epoch and
the last checkpoint's path, or with --on-nonfinite skip is skipped (model untouched) and counted.

NaNs are injected deterministically: the objective returns NaN at chosen steps, or a batch of
images is replaced by NaN (which also poisons BatchNorm statistics in the forward pass).
(That the losses themselves never produce NaN for finite inputs is tests/losses/test_fuzz.py.)
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import contrastkit.train.trainer as trainer
from conftest import wrap_objective
from contrastkit.cli import build_parser, config_from_args, main
from contrastkit.train import NonFiniteError
from contrastkit.models import load_checkpoint
from reliability._common import all_finite, pretrain_args


class _NaNAt(nn.Module):
    """The real objective, returning NaN at the given calls (one call per step)."""

    def __init__(self, inner: nn.Module, steps: set[int]) -> None:
        super().__init__()
        self.inner, self.steps, self.calls = inner, steps, 0

    def forward(self, outputs, labels):
        loss = self.inner(outputs, labels)
        self.calls += 1
        return loss * float("nan") if self.calls - 1 in self.steps else loss


def _nan_loss_at(monkeypatch, steps: set[int]) -> None:
    wrap_objective(monkeypatch, lambda objective: _NaNAt(objective, steps))


def _nan_images_at(monkeypatch, steps: set[int]) -> None:
    real, calls = trainer.forward_views, []

    def forward(model, views, *args):
        calls.append(1)
        if len(calls) - 1 in steps:
            views = torch.full_like(views, float("nan"))
        return real(model, views, *args)

    monkeypatch.setattr(trainer, "forward_views", forward)


def test_nan_loss_stops_with_step_epoch_and_checkpoint(folder, tmp_path, monkeypatch, capsys):
    _nan_loss_at(monkeypatch, {2})
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out, "--checkpoint-every-steps", "1")) == 2
    err = capsys.readouterr().err
    assert "non-finite loss or gradient at step 2 (epoch 0)" in err
    assert f"the last checkpoint is {out / 'last.pt'}" in err and "--on-nonfinite skip" in err
    state = load_checkpoint(out / "last.pt")  # the good state before the bad step, never a NaN one
    assert state["global_step"] == 2 and all_finite(state["model"]) and all_finite(state["optimizer"])
    assert not (out / "summary.json").exists()


def test_nan_at_first_step_says_no_checkpoint(folder, tmp_path, monkeypatch):
    _nan_loss_at(monkeypatch, {0})
    cfg = config_from_args(build_parser().parse_args(pretrain_args(folder, tmp_path / "run")))
    with pytest.raises(NonFiniteError, match=r"step 0 \(epoch 0\).*no checkpoint was written yet"):
        trainer.pretrain(cfg)


def test_skip_counts_steps_and_leaves_the_model_finite(folder, tmp_path, monkeypatch, capsys):
    """Step 1 sees NaN images (NaN BatchNorm statistics in the forward), step 2 a NaN loss."""
    _nan_images_at(monkeypatch, {1})
    _nan_loss_at(monkeypatch, {2})
    out = tmp_path / "run"
    assert main(pretrain_args(folder, out, "--on-nonfinite", "skip")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["skipped_nonfinite_steps"] == 2 and summary["global_step"] == 3
    state = load_checkpoint(out / "last.pt")
    assert all_finite(state["model"]) and all_finite(state["optimizer"])  # BN running stats included
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in state["history"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the deferred check runs on GPUs only)")
def test_gpu_deferred_check_never_checkpoints_nan_weights(folder, tmp_path, monkeypatch):  # pragma: no cover
    """On a GPU the check is deferred to the next log (no sync per step); a checkpoint in between
    must still raise rather than save weights updated with NaN gradients."""
    _nan_loss_at(monkeypatch, {1})
    out = tmp_path / "run"
    cfg = config_from_args(build_parser().parse_args(
        pretrain_args(folder, out, "--device", "cuda", "--log-every", "100", "--checkpoint-every-steps", "1")))
    with pytest.raises(NonFiniteError, match=r"step 1 \(epoch 0\)"):
        trainer.pretrain(cfg)
    state = load_checkpoint(out / "last.pt")
    assert state["global_step"] == 1 and all_finite(state["model"])
