"""Two nodes: two torchrun agents (``--nnodes 2 --nproc-per-node 1``) meet through a c10d rendezvous on localhost
and train a few DDP steps over gloo; every step's gradients, and the parameters after the last, equal those of one
process holding the whole batch.

This is the multi-node recipe of docs/usage.md with both "nodes" on one machine: each agent is what one node runs,
the rendezvous endpoint is the first node's address. The workers run this file as a script (``__main__`` below),
as tests/distributed/test_ddp_losses.py does, and reuse its model and port helpers.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if __name__ == "__main__":  # a torchrun worker: tests/ is not on the path there
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distributed.test_ddp_losses import IN_DIM, OUT_DIM, _free_port, _model  # noqa: E402

from contrastkit.losses import SupConLoss  # noqa: E402

NODES, STEPS, N, V = 2, 3, 8, 2
LABELS = [0, 1, 2, 0, 1, 2, 3, 3]  # classes shared across the two nodes' halves


def _step_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of one step: (N, V, IN) inputs and (N,) labels; node r holds rows [r N/2, (r+1) N/2)."""
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(N, V, IN_DIM, generator=g), torch.tensor(LABELS)


def _train(model: torch.nn.Module, rows: slice) -> dict[str, list]:
    """STEPS steps of SGD on the rows ``rows`` of each step's batch; the gradients of every step, the last
    parameters."""
    loss_fn = SupConLoss(0.1)  # gathers the candidates of every rank when a process group is initialised
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    grads = []
    for step in range(STEPS):
        x, labels = _step_batch(step)
        x, labels = x[rows], labels[rows]
        n = x.shape[0]
        z = model(x.reshape(n * V, IN_DIM)).reshape(n, V, OUT_DIM)  # (n, V, D)
        loss_fn(z, labels).backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {"grads": grads, "params": [p.detach().clone() for p in model.parameters()]}


def _worker_main(out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # env:// from the agent: MASTER_ADDR/PORT, RANK, WORLD_SIZE
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        assert world == NODES, world
        half = N // world
        result = _train(DDP(_model()), slice(rank * half, (rank + 1) * half))
        result["node"] = int(os.environ["GROUP_RANK"])  # which agent (node) started this worker
        result["local_rank"] = int(os.environ["LOCAL_RANK"])
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_torchrun_agents_train_as_one_process(tmp_path):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(NODES), "--nproc-per-node", "1",
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "multinode-test",
             "--local-addr", "127.0.0.1", "--max-restarts", "0", __file__, str(tmp_path)]
    agents = [subprocess.Popen(agent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(NODES)]
    logs = []
    for p in agents:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in agents:
                q.kill()
            said = logs + [q.communicate()[0] for q in agents[len(logs):]]  # each agent's output before the kill
            tails = [out[-2000:] for out in said]
            pytest.fail(f"the two torchrun agents did not finish within 240 s (rendezvous port {port}); their "
                        "output:\n" + "\n---\n".join(tails))
    for p, log in zip(agents, logs):
        assert p.returncode == 0, log[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(NODES)]
    assert sorted(r["node"] for r in ranks) == [0, 1] and all(r["local_rank"] == 0 for r in ranks)

    want = _train(_model(), slice(0, N))  # one process, the whole batch
    for r in ranks:
        for step in range(STEPS):
            for got, expected in zip(r["grads"][step], want["grads"][step]):
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
        for got, expected in zip(r["params"], want["params"]):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    moved = [not torch.equal(a, b) for a, b in zip(want["params"], _model().parameters())]
    assert all(moved)  # the control: the steps did change every parameter


if __name__ == "__main__":
    _worker_main(sys.argv[1])
