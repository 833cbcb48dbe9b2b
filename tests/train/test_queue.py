"""The momentum encoder and memory queue (issue 30): the queue's order and state, the momentum copy, the objective
(loss over batch + queue, keys enqueued after it, one move per step), gradient caching, and a checkpoint's model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import reference_losses as ref
from contrastkit.losses import MemoryQueue, MomentumContrastLoss
from contrastkit.methods.queue import QueueObjective
from contrastkit.models import ContrastiveModel, MomentumModel, ProjectionHead, build_model
from contrastkit.train.forward import forward_views
from contrastkit.train.gradcache import cached_backward
from contrastkit.train.optim import param_groups


def _keys(n, d=4, start=0):
    return torch.arange(start, start + n * d, dtype=torch.float32).view(n, d)


def test_queue_is_first_in_first_out_and_fills_up():
    q = MemoryQueue(6, 4, ())
    assert q.contents()[0].shape == (0, 4)
    q.push(_keys(2), torch.tensor([0, 1]))
    keys, labels = q.contents()
    assert torch.equal(keys, _keys(2)) and labels.tolist() == [0, 1] and (q.pointer, q.filled) == (2, 2)
    q.push(_keys(2, start=100), torch.tensor([2, 3]))
    q.push(_keys(2, start=200), torch.tensor([4, 5]))
    q.push(_keys(2, start=300), torch.tensor([6, 7]))  # overwrites the oldest two
    keys, labels = q.contents()
    assert torch.equal(keys[:2], _keys(2, start=300)) and torch.equal(keys[2:4], _keys(2, start=100))
    assert labels.tolist() == [6, 7, 2, 3, 4, 5] and (q.pointer, q.filled) == (2, 6)


def test_queue_state_round_trips_through_state_dict():
    q = MemoryQueue(4, 4, (3,))
    q.push(_keys(2), torch.tensor([[1, 0, 1], [0, 0, 0]]))
    r = MemoryQueue(4, 4, (3,))
    r.load_state_dict(q.state_dict())
    assert (r.pointer, r.filled) == (2, 2)
    assert torch.equal(r.contents()[0], q.contents()[0]) and torch.equal(r.contents()[1], q.contents()[1])
    with pytest.raises(ValueError, match="cannot be at position 9"):
        r.set_extra_state({"pointer": 9, "filled": 0})


def test_non_finite_keys_are_not_written():
    q = MemoryQueue(4, 4)
    q.push(_keys(2))
    q.push(torch.full((2, 4), float("nan")))  # the slots keep what they held (zeros), the position moves on
    assert torch.equal(q.keys[2:], torch.zeros(2, 4)) and torch.equal(q.keys[:2], _keys(2)) and q.pointer == 0


@pytest.mark.parametrize("size, keys, labels, match", [
    (6, _keys(4), None, "K=6 must be a multiple of the keys each step adds, 4"),
    (8, _keys(4, d=3), None, r"shape \(n, D\) = \(n, 4\)"),
    (8, _keys(4), torch.zeros(4, dtype=torch.long), "holds no labels"),
])
def test_bad_pushes_are_refused(size, keys, labels, match):
    with pytest.raises(ValueError, match=match):
        MemoryQueue(size, 4).push(keys, labels)


def _network(seed=0, bn_free=False):
    torch.manual_seed(seed)
    if bn_free:
        encoder = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        return ContrastiveModel(encoder, ProjectionHead(24, kind="linear", out_dim=5))
    return build_model("resnet18", width=0.125, cifar_stem=True, proj_dim=8)


def test_momentum_copy_follows_by_the_moving_average_and_takes_no_gradient():
    model = MomentumModel(_network(), 0.9)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.momentum.parameters()]
    model.follow()
    trained = list(model.encoder.parameters()) + list(model.head.parameters())
    for xi, old, theta in zip(model.momentum.parameters(), before, trained):
        torch.testing.assert_close(xi, 0.9 * old + 0.1 * theta)
        assert not xi.requires_grad
    assert model.momentum.updates == 1
    optimised = {id(p) for g in param_groups(model, 1e-4) for p in g["params"]}
    assert optimised == {id(p) for p in trained}  # the optimiser never sees the copy
    h, out = model(torch.randn(4, 3, 16, 16))
    assert h.shape == (4, model.encoder.feature_dim) and out.shape == (4, 16)  # queries z (8) then keys (8)
    out.sum().backward()
    assert all(p.grad is None for p in model.momentum.parameters())
    assert all(p.grad is not None for p in model.head.parameters())


def test_cosine_ramp_goes_from_m_to_one():
    model = MomentumModel(_network(), 0.9, "cosine", total_steps=10)
    assert model.momentum_at(0) == pytest.approx(0.9)
    assert model.momentum_at(5) == pytest.approx(0.95)
    assert model.momentum_at(10) == model.momentum_at(20) == pytest.approx(1.0)
    assert MomentumModel(_network(), 0.9).momentum_at(10) == 0.9


@pytest.mark.parametrize("m", [1.0, -0.1, float("nan")])
def test_momentum_outside_zero_one_is_refused(m):
    with pytest.raises(ValueError, match=r"momentum m must be a number in \[0, 1\)"):
        MomentumModel(_network(), m)


def _objective(model, size, labelled):
    loss = MomentumContrastLoss(0.2, chunk_size=5)
    return QueueObjective(loss, MemoryQueue(size, model.key_dim, () if labelled else None), labelled, model)


@pytest.mark.parametrize("labelled", [False, True])
def test_queue_loss_equals_the_loop_over_batch_plus_queue_and_keys_come_after(labelled):
    """Step 1 sees an empty queue (its own keys are enqueued after its loss); step 2's loss is the float64 loop of
    its queries over its batch's keys plus step 1's keys."""
    model = MomentumModel(_network(bn_free=True).double(), 0.9)
    objective = _objective(model, 12, labelled).double()  # a float64 queue for the float64 model
    views = torch.randn(2, 6, 2, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 0, 2, 1, 2], [1, 1, 0, 2, 0, 0]])
    keys_seen = []
    for step in range(2):
        outputs = forward_views(model, views[step])  # (6, 2, 10)
        queries, keys = outputs[..., :5], outputs[..., 5:]
        memory, memory_labels = objective.queue.contents()
        y = labels[step] if labelled else None
        want = ref.supcon_weighted_loop(queries, y, 0.2, memory if len(memory) else None,
                                        memory_labels if labelled and len(memory) else None, keys=keys)
        got = objective(outputs, labels[step])
        assert got.item() == pytest.approx(want.item(), rel=1e-10)
        keys_seen.append(keys.detach().reshape(12, 5))
        assert torch.equal(objective.queue.contents()[0], keys_seen[-1])  # the whole queue is replaced each step
        assert model.momentum.updates == step + 1
    if labelled:
        assert objective.queue.contents()[1].tolist() == labels[1].repeat_interleave(2).tolist()
    assert not torch.equal(keys_seen[0], keys_seen[1])


def test_gradient_caching_moves_the_copy_once_and_gives_the_full_gradient():
    """A BN-free model: the cached step's gradient, queue and momentum copy equal the plain step's."""
    results = []
    for micro in (None, 2):
        model = MomentumModel(_network(seed=1, bn_free=True).double(), 0.5)
        objective = _objective(model, 24, labelled=False).double()
        objective.queue.push(torch.randn(12, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
        views = torch.randn(6, 2, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        if micro is None:
            loss = objective(forward_views(model, views), None)
            loss.backward()
        else:
            loss = cached_backward(model, objective, views, None, micro)
        results.append((loss.item(), [p.grad.clone() for p in model.encoder.parameters()],
                        objective.queue.contents()[0].clone(), [p.clone() for p in model.momentum.parameters()],
                        model.momentum.updates))
    (l1, g1, q1, m1, u1), (l2, g2, q2, m2, u2) = results
    assert u1 == u2 == 1 and l1 == pytest.approx(l2, rel=1e-12)
    torch.testing.assert_close(q1, q2)
    for a, b in zip(g1 + m1, g2 + m2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- nothing read back from the device (issue 8's rule)

META = torch.device("meta")  # no values: any read back (.item(), bool(), nonzero) raises


@pytest.mark.parametrize("method", ["simclr-queue", "supcon-queue"])
def test_a_queue_step_reads_nothing_from_the_device(method):
    """Forward (queries and keys), the loss over batch + queue, the push, the copy's move, backward and the
    optimiser step, three times (the queue fills, then wraps), all on the meta device."""
    from contrastkit.config import PretrainConfig
    from contrastkit.methods import DataInfo, get_method, with_method_defaults

    cfg = with_method_defaults(PretrainConfig(method=method, queue_size=64, width=0.125, batch_size=16))
    parts = get_method(method).build(cfg, DataInfo([0, 1, 2] * 6, ["a", "b", "c"], 16, "toy"))
    model, objective = parts.model.to(META), parts.objective.to(META)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9, foreach=True)
    for _ in range(5):
        labels = torch.empty(16, dtype=torch.long, device=META) if method == "supcon-queue" else None
        loss = objective(forward_views(model, torch.empty(16, 2, 3, 16, 16, device=META)), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert loss.device == META and objective.queue.filled == 64 and objective.queue.pointer == 32
    assert model.momentum.updates == 5


def test_label_sets_read_nothing_from_the_device():
    from contrastkit.losses import SupConLoss

    x = torch.empty(8, 2, 16, device=META, requires_grad=True)
    labels = torch.empty(8, 4, device=META)
    SupConLoss(0.1, check_values=False, even_batches=True)(x, labels).backward()
    q = torch.empty(8, 2, 16, device=META, requires_grad=True)
    MomentumContrastLoss(0.2, check_values=False, even_batches=True)(
        q, torch.empty(8, 2, 16, device=META), labels, torch.empty(32, 16, device=META),
        torch.empty(32, 4, device=META)).backward()
    assert x.grad.device == META and q.grad.device == META
