"""``--sync-debug``: the training loop on a GPU raises at any host synchronisation inside a step (issue 8).

On CUDA this is the end-to-end form of ``test_no_host_sync.py``: the real loop (data to the device, BatchAugment or
the per-image loader, forward, loss, backward, finite flag, optimiser and scheduler) under
``torch.cuda.set_sync_debug_mode("error")`` for every step after the first. On CPU only the refusals are tested.
"""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, make_image_folder
from contrastkit.cli import main
from contrastkit.train.trainer import sync_guard as _sync_guard

CUDA = torch.cuda.is_available()


def _args(folder, out, *extra):
    return ["pretrain", "--data", str(folder), "--epochs", "2", "--out", str(out), *TINY, "--batch-size", "6",
            "--size", "16", "--preset", "cifar", "--knn-every", "0", "--log-every", "100", *extra]


def test_sync_debug_needs_cuda(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    assert main(_args(folder, out, "--device", "cpu", "--sync-debug")) == 2
    assert "--sync-debug checks CUDA synchronisations" in capsys.readouterr().err and not out.exists()


def test_guard_off_is_a_no_op():
    with _sync_guard(False):
        assert float(torch.ones(())) == 1.0


@pytest.mark.skipif(not CUDA, reason="needs CUDA (torch.cuda.set_sync_debug_mode)")
def test_guard_on_raises_at_a_read():  # pragma: no cover - GPU only
    x = torch.ones(3, device="cuda")
    with pytest.raises(RuntimeError, match="synchroniz"):
        with _sync_guard(True):
            x.sum().item()
    assert torch.cuda.get_sync_debug_mode() == 0


@pytest.mark.skipif(not CUDA, reason="needs CUDA (torch.cuda.set_sync_debug_mode)")
@pytest.mark.parametrize("extra", [
    ["--method", "simclr", "--augment-on", "device"],
    ["--method", "supcon", "--augment-on", "device", "--supcon-variant", "in"],
    ["--method", "simclr", "--augment-on", "device", "--precision", "fp32", "--optimizer", "lars", "--n-views", "3"],
    ["--method", "simclr", "--augment-on", "workers"],
    ["--method", "simclr", "--augment-on", "device", "--preset", "imagenet", "--size", "24"],
    ["--method", "simclr", "--augment-on", "device", "--on-nonfinite", "skip", "--loss", "margin", "--semi-hard"],
    ["--method", "simclr", "--augment-on", "device", "--precision", "fp16"],  # GradScaler with fused SGD
    ["--method", "simclr", "--augment-on", "device", "--precision", "fp16", "--optimizer", "lars"],  # undone overflow
])
def test_training_steps_never_synchronise_on_a_gpu(tmp_path, capsys, extra):  # pragma: no cover - GPU only
    folder = make_image_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    assert main(_args(folder, out, "--device", "cuda", "--sync-debug", *extra)) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 4
