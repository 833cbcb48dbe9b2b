"""A momentum-queue run stopped mid-epoch and resumed equals the run made straight, bit for bit: the trained
weights, the momentum copy and its move count, the queue, its position and fill (issue 30)."""
from __future__ import annotations

import pytest
import torch

from contrastkit.cli import main
from contrastkit.models import load_checkpoint, load_checkpoint_model
from reliability._common import FAST

# 12 images, batch 4, 2 views: 8 keys a step; K = 16 fills after two steps and wraps around after that
QUEUE = ["--queue-size", "16", "--momentum-encoder", "0.9", "--num-workers", "0"]


def _args(method: str, data, out, *extra: str) -> list[str]:
    return ["pretrain", "--method", method, "--data", str(data), "--epochs", "2", "--out", str(out), *FAST, *QUEUE,
            *extra]


def _assert_same(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == 6
    assert set(a["model"]) == set(b["model"]) and any(k.startswith("momentum.") for k in a["model"])
    for key, value in a["model"].items():  # trained weights, the momentum copy, BN buffers, the move count
        assert (torch.equal(value, b["model"][key]) if isinstance(value, torch.Tensor) else value == b["model"][key]), key
    assert a["model"]["momentum._extra_state"] == {"updates": 6}
    for key, value in a["objective"].items():  # the queue's keys and labels, its position and fill
        assert (torch.equal(value, b["objective"][key]) if isinstance(value, torch.Tensor)
                else value == b["objective"][key]), key
    assert a["objective"]["queue._extra_state"] == {"pointer": 0, "filled": 16}
    assert a["history"][0]["loss"] == b["history"][0]["loss"]  # the first epoch, before the stop


@pytest.mark.parametrize("method, extra", [("simclr-queue", ()), ("supcon-queue", ("--momentum-ramp", "cosine"))])
def test_stopped_mid_epoch_and_resumed_equals_straight(folder, tmp_path, method, extra):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(_args(method, folder, full, *extra)) == 0
    assert main(_args(method, folder, part, *extra, "--max-steps", "4")) == 0
    state = load_checkpoint(part / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 1, 4)
    assert state["objective"]["queue._extra_state"] == {"pointer": 0, "filled": 16}  # 32 keys pushed: wrapped
    assert main(_args(method, folder, part, *extra, "--resume", "--max-steps", "0")) == 0  # lifts the run's limit
    _assert_same(load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt"))
    model, meta, _ = load_checkpoint_model(part / "last.pt")  # the trained network, without the copy
    assert meta.method == method and not any(k.startswith("momentum") for k in model.state_dict())


def test_resume_with_another_queue_size_is_refused(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args("simclr-queue", folder, out, "--max-steps", "1")) == 0
    capsys.readouterr()
    rc = main(_args("simclr-queue", folder, out, "--resume", "--queue-size", "8"))
    assert rc == 2 and "queue_size: checkpoint 16, now 8" in capsys.readouterr().err
