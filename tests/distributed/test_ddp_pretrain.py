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
           "--cifar-stem", "on", "--num-workers", "0", "--no-progress", "--knn-k", "5", "--augment-on", "workers",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # only rank 0 prints and writes files
    assert summaries[0]["world_size"] == 2 and summaries[0]["global_step"] == 6  # 24 images / 8 x 2 epochs
    saved = json.loads((out / "summary.json").read_text())
    assert saved["world_size"] == 2 and saved["knn_top1"] is not None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "epoch" for r in rows) == 2  # written once, by rank 0


_SKIP_DRIVER = '''
import dataclasses, json, os, sys
import torch
from contrastkit.cli import main
from contrastkit.train import nonfinite, run

rank = int(os.environ["RANK"])
real_method, calls, sums = run.get_method, [], []


class NaNLossAtStep1(torch.nn.Module):
    """Rank 0's loss is NaN at step 1 while its gradients stay finite (zero), as when the objective masks an
    overflowing output: only the loss says the step is bad, so only an all-reduced flag tells rank 1."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, outputs, labels):
        loss = self.inner(outputs, labels)
        calls.append(1)
        if rank == 0 and len(calls) == 2:
            loss = torch.where(torch.zeros((), dtype=torch.bool), loss, torch.full((), float("nan")))
        return loss


def method(name):
    m = real_method(name)

    def build(cfg, data):
        parts = m.build(cfg, data)
        parts.objective = NaNLossAtStep1(parts.objective)
        return parts

    return dataclasses.replace(m, build=build)


class Recording(nonfinite.NonFiniteGuard):
    def after_step(self):
        super().after_step()
        sums.append(float(sum(p.double().sum() for p in self.params)))


run.get_method = method
run.NonFiniteGuard = Recording
rc = main(sys.argv[2:])
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump({"rc": rc, "sums": sums}, f)
'''


@pytest.mark.slow
def test_torchrun_skip_mode_skips_on_every_rank(tmp_path):
    """A non-finite step on one rank is skipped by all of them (the flag is all-reduced), so the replicas stay equal.
    Without the all-reduce rank 1 would take the step rank 0 undoes (its gradients are finite)."""
    folder = make_image_folder(tmp_path / "data", per_class=8)
    out, driver = tmp_path / "run", tmp_path / "driver.py"
    driver.write_text(_SKIP_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(driver), str(tmp_path), "pretrain", "--method", "simclr",
           "--data", str(folder), "--epochs", "1", "--batch-size", "8", "--encoder", "resnet18", "--width", "0.125",
           "--cifar-stem", "on", "--num-workers", "0", "--no-progress", "--knn-every", "0", "--on-nonfinite", "skip",
           "--augment-on", "device", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_nonfinite_steps"] == 1 and summary["global_step"] == 3
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rc"] for r in ranks] == [0, 0] and len(ranks[0]["sums"]) == 3
    assert ranks[0]["sums"] == ranks[1]["sums"]  # identical parameters on both ranks after every step
    assert ranks[0]["sums"][1] == ranks[0]["sums"][0] != ranks[0]["sums"][2]  # step 1 undone, step 2 taken
