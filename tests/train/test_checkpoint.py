import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from contrastkit.models import CheckpointError, load_checkpoint, save_checkpoint
from contrastkit.train.state import rng_state, set_rng_state


def _state(value=1.0):
    return {"model": {"w": torch.full((3,), value)}, "config": {"method": "simclr"}, "epoch": 2}


def test_roundtrip_keeps_previous(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), p)
    save_checkpoint(_state(2.0), p)
    assert load_checkpoint(p)["model"]["w"][0] == 2.0
    assert load_checkpoint(tmp_path / "last.prev.pt")["model"]["w"][0] == 1.0
    assert not (tmp_path / "last.pt.tmp").exists()


def test_truncated_or_missing_checkpoint_names_the_file(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint(_state(), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(p)):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a contrastkit checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_rng_state_roundtrip():
    import random

    state = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_killed_during_write_leaves_loadable_checkpoint(tmp_path):
    """SIGKILL a process while it rewrites a large checkpoint in a loop: last.pt always loads."""
    p = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(10)}, "config": {}}, p)
    script = textwrap.dedent(f"""
        import torch, sys
        from contrastkit.models import save_checkpoint
        big = torch.randn(4_000_000)
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            save_checkpoint({{"model": {{"w": big + i}}, "config": {{}}}}, {str(p)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    import time

    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_checkpoint(p)  # never truncated: the rename is atomic
    assert "model" in state
