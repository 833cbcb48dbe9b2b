"""`torchrun --nproc_per_node 2` with a momentum queue on CPU (gloo): every rank holds the identical queue, bit for bit,
made of the keys of both ranks, and the identical momentum copy (issue 30)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import make_image_folder

_DRIVER = '''
import dataclasses, os, sys
import torch
from contrastkit.cli import main
from contrastkit.train import run

rank = int(os.environ["RANK"])
real_method, built = run.get_method, []


def method(name):
    m = real_method(name)

    def build(cfg, data):
        parts = m.build(cfg, data)
        built.append(parts)
        return parts

    return dataclasses.replace(m, build=build)


run.get_method = method
rc = main(sys.argv[2:])
parts = built[0]
torch.save({"rc": rc, "queue": parts.objective.queue.state_dict(), "momentum": parts.model.momentum.state_dict(),
            "trained": parts.model.encoder.state_dict()}, os.path.join(sys.argv[1], f"rank{rank}.pt"))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr-queue", "supcon-queue"])
def test_every_rank_holds_the_identical_queue(tmp_path, method):
    folder = make_image_folder(tmp_path / "data", per_class=8)  # 24 images: 3 steps of 8 (4 per rank)
    out, driver = tmp_path / "run", tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(driver), str(tmp_path), "pretrain", "--method", method,
           "--data", str(folder), "--epochs", "1", "--batch-size", "8", "--encoder", "resnet18", "--width", "0.125",
           "--cifar-stem", "on", "--num-workers", "0", "--no-progress", "--knn-every", "0", "--augment-on", "device",
           "--queue-size", "32", "--momentum-encoder", "0.9", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["rc"] for r in ranks] == [0, 0]
    q0, q1 = ranks[0]["queue"], ranks[1]["queue"]
    # 3 steps x 16 keys (8 images x 2 views over both ranks) into 32 slots: wrapped once, pointer at 16
    assert q0["_extra_state"] == q1["_extra_state"] == {"pointer": 16, "filled": 32}
    assert torch.equal(q0["keys"], q1["keys"])
    if method == "supcon-queue":
        assert torch.equal(q0["labels"], q1["labels"]) and bool((q0["labels"] >= 0).all())
    last = q0["keys"][:16]  # the last step's keys: rank 0's 8, then rank 1's 8
    assert not torch.equal(last[:8], last[8:]) and bool((last.abs().sum(dim=1) > 0).all())
    for name in ("momentum", "trained"):  # weights (BatchNorm statistics are each rank's own, as with DDP)
        for key, value in ranks[0][name].items():
            if "running_" in key or "num_batches" in key:
                continue
            assert (torch.equal(value, ranks[1][name][key]) if isinstance(value, torch.Tensor)
                    else value == ranks[1][name][key]), (name, key)
    assert ranks[0]["momentum"]["_extra_state"] == {"updates": 3}
