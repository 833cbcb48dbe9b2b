"""`torchrun --nproc_per_node 2 -m contrastkit pretrain` on CPU (gloo): rank 0 alone writes outputs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import make_image_folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    folder = make_image_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "contrastkit", "pretrain", "--method", "supcon",
           "--data", str(folder), "--epochs", "2", "--batch-size", "8", "--encoder", "resnet18", "--width", "0.125",
           "--cifar-stem", "on", "--num-workers", "0", "--no-progress", "--knn-k", "5", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # only rank 0 prints and writes files
    assert summaries[0]["world_size"] == 2 and summaries[0]["global_step"] == 6  # 24 images / 8 x 2 epochs
    saved = json.loads((out / "summary.json").read_text())
    assert saved["world_size"] == 2 and saved["knn_top1"] is not None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "epoch" for r in rows) == 2  # written once, by rank 0
