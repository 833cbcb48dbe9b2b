"""SIGTERM, SIGUSR1 and SIGINT stop pretraining at the next step with a checkpoint, print the command that
resumes it, and exit with the shell's code for the signal (issue 25: SIGTERM ended a run silently, with no
checkpoint and no hint). The resumed run finishes."""
from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time

import pytest

from contrastkit.cli import main
from contrastkit.models import load_checkpoint
from reliability._common import folder, pretrain_args  # noqa: F401  (folder: the fixture)


def _first_step_logged(out, proc, timeout=300.0):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        metrics = out / "metrics.jsonl"
        if metrics.is_file() and '"kind": "step"' in metrics.read_text():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no step was logged")


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGUSR1, 138), (signal.SIGINT, 130)])
def test_a_signal_saves_a_checkpoint_and_says_how_to_resume(sig, code, folder, tmp_path):
    out = tmp_path / "run"
    argv = pretrain_args(folder, out, "--log-every", "1", epochs=6)  # 18 steps
    proc = subprocess.Popen([sys.executable, "-m", "contrastkit", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _first_step_logged(out, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert lines[-2].startswith(f"interrupted: {out / 'last.pt'} survives, saved at")
    resume = lines[-1]
    assert resume.startswith("resume with: contrastkit pretrain ") and resume.endswith("--resume")
    state = load_checkpoint(out / "last.pt")
    assert 1 <= state["global_step"] < 18  # saved where it stopped, not at an epoch's end only
    assert "Traceback" not in err
    assert main(shlex.split(resume.removeprefix("resume with: contrastkit "))) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 18 and summary["stop_reason"] == "completed"
