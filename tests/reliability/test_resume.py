"""Exact resume (issue 6): a run stopped at an epoch end, or killed with SIGKILL after a mid-epoch
checkpoint, and resumed with --resume ends bit-identical to the uninterrupted run.

(The mid-epoch stop with --max-steps, for both augmentation paths, is tests/cli/test_cli.py::
test_resume_mid_epoch_is_bit_exact.)
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from contrastkit.cli import main
from contrastkit.models import load_checkpoint
from reliability._common import pretrain_args

# One DataLoader worker: views must not depend on which process makes them.
EXTRA = ("--num-workers", "1")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The uninterrupted 2-epoch run (6 steps) and its data folder."""
    from conftest import make_image_folder

    root = tmp_path_factory.mktemp("resume")
    data = make_image_folder(root / "data", per_class=4, size=16)
    assert main(pretrain_args(data, root / "full", *EXTRA, epochs=2)) == 0
    return data, load_checkpoint(root / "full" / "last.pt")


def _assert_same(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == 6
    for key, value in a["model"].items():  # weights and BatchNorm buffers
        assert torch.equal(value, b["model"][key]), key
    for pid, st in a["optimizer"]["state"].items():  # momentum buffers
        for name, value in st.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), (pid, name)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]


def test_resume_at_epoch_end_is_bit_exact(full_run, tmp_path):
    data, full = full_run
    part = tmp_path / "part"
    assert main(pretrain_args(data, part, *EXTRA, "--max-steps", "3", epochs=2)) == 0
    state = load_checkpoint(part / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 0, 3)
    # --resume takes the run's options (its --max-steps 3 too): --max-steps 0 lifts the limit
    assert main(pretrain_args(data, part, *EXTRA, "--resume", "--max-steps", "0", epochs=2)) == 0
    _assert_same(full, load_checkpoint(part / "last.pt"))


def test_resume_after_sigkill_mid_epoch_is_bit_exact(full_run, tmp_path):
    """A preempted process (SIGKILL right after its 4th checkpoint: epoch 2, step 1 of 3) loses nothing."""
    data, full = full_run
    part = tmp_path / "part"
    argv = pretrain_args(data, part, *EXTRA, "--checkpoint-every-steps", "1", epochs=2)
    script = textwrap.dedent(f"""
        import os, signal, torch
        torch.set_num_threads({torch.get_num_threads()})  # as this process: the reduction order must match
        import contrastkit.train.trainer as trainer
        from contrastkit.cli import main
        saves = []
        real_save = trainer.save_checkpoint
        def save_then_die(state, path):
            real_save(state, path)
            saves.append(path)
            if len(saves) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
        trainer.save_checkpoint = save_then_die
        main({argv!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not (part / "summary.json").exists()
    state = load_checkpoint(part / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 1, 4)
    assert main(pretrain_args(data, part, *EXTRA, "--checkpoint-every-steps", "1", "--resume", epochs=2)) == 0
    _assert_same(full, load_checkpoint(part / "last.pt"))
