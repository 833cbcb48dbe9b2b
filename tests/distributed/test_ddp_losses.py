"""Two gloo processes in DDP give the loss and gradients of one process holding the whole batch.

The ranks run as subprocesses executing this file as a script (``__main__``
below) rather than through ``torch.multiprocessing.spawn``: under pytest's
``--import-mode=importlib`` a test module is not importable by name in a spawned
child, and a script needs no pickling. Each rank initialises gloo over TCP on
127.0.0.1, trains nothing, and saves its loss and DDP-averaged gradients for
each case; the test compares them with a single-process run.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn

from contrastkit.runtime import distributed
from contrastkit.losses import MomentumContrastLoss, NTXentLoss, SupConLoss

IN_DIM, HIDDEN, OUT_DIM = 6, 16, 8
WORLD = 2

class _MomentumContrast(nn.Module):
    """MomentumContrastLoss with keys made from the outputs (detached, reversed: a fixed stand-in for a momentum
    encoder's) and a memory of keys, the same on every rank: ``loss(z, labels)``."""

    def __init__(self, loss: nn.Module, memory_labels: list | None, k: int = 7) -> None:
        super().__init__()
        self.loss = loss
        self.memory = torch.randn(k, OUT_DIM, generator=torch.Generator().manual_seed(k))
        self.memory_labels = None if memory_labels is None else torch.tensor(memory_labels)

    def forward(self, z, labels):
        return self.loss(z, z.detach().flip(-1), labels, self.memory, self.memory_labels)


_MULTI_HOT = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 0, 0]]

# name -> (per-rank batch sizes, V, global labels or None, loss factory)
CASES = {
    "ntxent": ([4, 4], 2, None, lambda: NTXentLoss(0.5)),
    "ntxent_uneven": ([3, 5], 2, None, lambda: NTXentLoss(0.2, chunk_size=3)),
    "supcon_repeats": ([4, 4], 2, [0, 1, 2, 0, 1, 2, 0, 1], lambda: SupConLoss(0.1)),
    "supcon_unlabelled_in": ([4, 4], 3, [0, -1, 1, 0, -1, 1, 2, -1], lambda: SupConLoss(0.1, "in", chunk_size=5)),
    "supcon_unlabelled_out": ([4, 4], 2, [0, -1, 1, 0, -1, 1, 2, -1], lambda: SupConLoss(0.3)),
    # V = 1: anchors without positive are left out; rank 0 has 3 valid anchors, rank 1 only 2.
    "supcon_one_view": ([4, 4], 1, [0, 1, 2, 0, 1, 5, -1, 2], lambda: SupConLoss(0.2)),
    # check_values=False: labels grouped on the device, the anchors with a positive counted there (the trainer's path)
    "supcon_one_view_sync_free": ([4, 4], 1, [0, 1, 2, 0, 1, 5, -1, 2], lambda: SupConLoss(0.2, check_values=False)),
    "supcon_in_sync_free": ([3, 5], 3, [0, -1, 1, 0, -1, 1, 2, -1],
                            lambda: SupConLoss(0.1, "in", chunk_size=5, check_values=False)),
    # even_batches=True (the trainer's setting): no size exchange before the gathers
    "ntxent_even_sync_free": ([4, 4], 2, None, lambda: NTXentLoss(0.5, check_values=False, even_batches=True)),
    "supcon_even_sync_free": ([4, 4], 2, [0, 1, 2, 0, 1, 2, 0, 1],
                              lambda: SupConLoss(0.1, chunk_size=3, check_values=False, even_batches=True)),
    "supcon_even_checked": ([4, 4], 1, [0, 1, 2, 0, 1, 5, -1, 2], lambda: SupConLoss(0.2, even_batches=True)),
    # issue 30: queries against the keys of every rank plus a queue; multi-hot labels
    "moco_sync_free": ([4, 4], 2, None, lambda: _MomentumContrast(
        MomentumContrastLoss(0.5, check_values=False, even_batches=True), None)),
    "moco_classes_uneven": ([3, 5], 3, [0, -1, 1, 0, -1, 1, 2, -1], lambda: _MomentumContrast(
        MomentumContrastLoss(0.1, chunk_size=3), [1, 0, 4, -1, 2, 2, 0])),
    "moco_label_sets_sync_free": ([4, 4], 2, _MULTI_HOT, lambda: _MomentumContrast(
        MomentumContrastLoss(0.2, check_values=False, even_batches=True), [[0, 1, 0], [1, 0, 0], [0, 0, 0],
                                                                           [1, 1, 1], [0, 0, 1], [0, 1, 0],
                                                                           [1, 0, 0]])),
    "multilabel": ([3, 5], 2, _MULTI_HOT, lambda: SupConLoss(0.2, chunk_size=3)),
    "multilabel_one_view_sync_free": ([4, 4], 1, _MULTI_HOT, lambda: SupConLoss(0.2, check_values=False,
                                                                               even_batches=True)),
}

# Reads back to the host (Tensor.item, bool(), int(), ...) during the loss's forward and backward on each rank.
# The sync-free losses read nothing with even batches; uneven batches cost the one size exchange.
HOST_READS = {"ntxent_even_sync_free": 0, "supcon_even_sync_free": 0, "supcon_in_sync_free": 1,
              "supcon_one_view_sync_free": 1, "moco_sync_free": 0, "moco_label_sets_sync_free": 0, "multilabel_one_view_sync_free": 0}
_READ_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def _count_host_reads():
    """Count calls of the Tensor methods that copy a value to the host."""
    count = [0]
    saved = {name: getattr(torch.Tensor, name) for name in _READ_METHODS}

    def counting(method):
        def wrapper(*args, **kwargs):
            count[0] += 1
            return method(*args, **kwargs)
        return wrapper

    for name, method in saved.items():
        setattr(torch.Tensor, name, counting(method))
    try:
        yield count
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN_DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT_DIM))


def _batch(sizes, V):
    g = torch.Generator().manual_seed(sum(sizes) * 10 + V)
    return torch.randn(sum(sizes), V, IN_DIM, generator=g)  # (N, V, IN)


def _loss_and_grads(model, loss_fn, x, labels):
    N, V, _ = x.shape
    z = model(x.reshape(N * V, IN_DIM)).reshape(N, V, OUT_DIM)  # (N, V, D)
    with _count_host_reads() as reads:
        if isinstance(loss_fn, NTXentLoss):
            loss = loss_fn(z[:, 0], z[:, 1])
        else:
            loss = loss_fn(z, labels)
        loss.backward()
    return loss.item(), [p.grad.detach().clone() for p in model.parameters()], reads[0]


def _rank_main(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        assert distributed.is_distributed() and distributed.get_world_size() == WORLD and distributed.get_rank() == rank
        results = {}
        for name, (sizes, V, labels, make_loss) in CASES.items():
            start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
            x = _batch(sizes, V)[start:stop]
            local_labels = None if labels is None else torch.tensor(labels[start:stop])
            ddp = DDP(_model())
            results[name] = _loss_and_grads(ddp, make_loss(), x, local_labels)
        errors = []
        negative = [3, 3]
        negative[1 - rank] = -1
        for bad in ([3], [3, 3, 3], [4, 4], negative):
            try:
                distributed.gather_with_grad(torch.zeros(3, 2), sizes=bad)
            except ValueError as e:
                errors.append(str(e))
        results["bad_sizes"] = errors
        results["sizes"] = distributed.gather_sizes(torch.zeros(2 + rank, 5))
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp"))
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, __file__, str(rank), str(port), out], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(WORLD)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("DDP ranks did not finish within 120 s")
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
    return [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(WORLD)]


@pytest.mark.parametrize("name", list(CASES))
def test_ddp_matches_single_process(ddp_results, name):
    sizes, V, labels, make_loss = CASES[name]
    model = _model()
    full_labels = None if labels is None else torch.tensor(labels)
    want_loss, want_grads, _ = _loss_and_grads(model, make_loss(), _batch(sizes, V), full_labels)
    rank_losses = [r[name][0] for r in ddp_results]
    # Each rank returns its scaled local part; their mean is the one-process loss.
    assert sum(rank_losses) / WORLD == pytest.approx(want_loss, rel=1e-5)
    for rank_result in ddp_results:
        for got, want in zip(rank_result[name][1], want_grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(HOST_READS))
def test_ddp_host_reads(ddp_results, name):
    assert [r[name][2] for r in ddp_results] == [HOST_READS[name]] * WORLD


def test_checked_loss_reads_the_host(ddp_results):
    # control for the counter: the checked path reads (finite inputs, labels, anchors with a positive)
    assert all(r["supcon_even_checked"][2] >= 3 for r in ddp_results)


def test_gather_sizes_and_bad_sizes(ddp_results):
    assert [r["sizes"] for r in ddp_results] == [[2, 3]] * WORLD
    for r in ddp_results:
        # wrong length, wrong entry for this rank (3 samples), a negative size: a ValueError before any collective
        assert len(r["bad_sizes"]) == 4 and all("sizes must give" in e and "got [" in e for e in r["bad_sizes"])


def test_helpers_are_no_ops_without_process_group():
    assert not distributed.is_distributed()
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_with_grad(x) is x
    assert distributed.gather_no_grad(x) is x
    assert distributed.gather_sizes(x) == [3]


if __name__ == "__main__":
    _rank_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
