"""Distillation as an objective of the training loop: frozen teacher, same views, student learns its labels."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from contrastkit.models import FineTunedNetwork
from contrastkit.train.gradcache import cached_backward
from contrastkit.models import HeadPrefix
from contrastkit import create_encoder
from contrastkit.methods.distill import DistillationModel, DistillationObjective

C = 4


def _network(seed: int) -> FineTunedNetwork:
    torch.manual_seed(seed)
    enc = create_encoder("resnet18", cifar_stem=True, width=0.125)
    return FineTunedNetwork(enc, HeadPrefix([], enc.feature_dim), nn.Linear(enc.feature_dim, C))


def _images(n: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _loss(model, objective, x, labels=None):
    """What the training loop does with a batch of V=1 view: forward, (N, V, D) outputs, objective."""
    _, out = model(x)  # (N, 2C)
    return objective(out[:, None], labels)  # outputs (N, 1, 2C)


def test_teacher_is_frozen_and_sees_the_same_views():
    teacher, student = _network(0), _network(1)
    model = DistillationModel(student, teacher)
    model.train()
    assert student.training and not teacher.training  # the teacher stays in eval mode
    assert all(not p.requires_grad for p in teacher.parameters())
    assert {k.split(".")[0] for k in model.state_dict()} == {"student"}  # checkpoints hold the student
    assert {id(p) for p in model.parameters()} == {id(p) for p in student.parameters()}

    x = _images(6)
    h, out = model(x)
    assert h.shape == (6, student.encoder.feature_dim) and out.shape == (6, 2 * C)
    with torch.no_grad():
        assert torch.equal(out[:, C:], teacher(x))  # the teacher's logits of exactly these views
    _loss(model, DistillationObjective(C, temperature=2.0), x).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())

    model.to(torch.float64)
    assert next(teacher.parameters()).dtype == torch.float64  # follows the student's device and dtype


def test_objective_validation_and_nonfinite_outputs():
    obj = DistillationObjective(C)
    with pytest.raises(ValueError, match=r"\(N, V, 2C\) = \(N, V, 8\)"):
        obj(torch.randn(4, 1, C), None)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        DistillationObjective(1)
    bad = torch.randn(4, 2, 2 * C)
    bad[0, 0, 0] = float("nan")
    assert torch.isnan(obj(bad, None))  # the trainer's non-finite guard sees NaN, not an exception
    assert not DistillationObjective(C).needs_labels and DistillationObjective(C, labelled_weight=0.5).needs_labels


def test_gradient_caching_gives_the_plain_gradient():
    teacher, student = _network(0), _network(1)
    for net in (teacher, student):  # no BatchNorm batch statistics: caching is then exact
        net.eval()
    model = DistillationModel(student, teacher)
    model.eval()
    obj = DistillationObjective(C, temperature=2.0)
    views = _images(8)[:, None]  # (N, V=1, 3, 8, 8)
    plain = _loss(model, obj, views[:, 0])
    plain.backward()
    want = [p.grad.clone() for p in student.parameters()]
    student.zero_grad(set_to_none=True)
    cached = cached_backward(model, obj, views, None, micro_batch_size=3)
    assert torch.allclose(cached, plain.detach(), rtol=1e-5)
    for p, g in zip(student.parameters(), want):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6)


def test_distilling_into_a_copy_at_very_low_temperature_matches_the_teacher_hard_labels():
    x = _images(24)
    teacher = _network(0)
    with torch.no_grad():
        teacher.classifier.weight.mul_(20.0)  # confident, varied predictions
        teacher.train()
        for _ in range(10):  # BatchNorm running statistics of these images
            teacher(x)
    teacher.eval()
    with torch.no_grad():
        hard = teacher(x).argmax(dim=1)
    assert len(set(hard.tolist())) >= 2

    student = copy.deepcopy(teacher)  # a copy of the teacher ...
    torch.manual_seed(5)
    student.classifier.reset_parameters()  # ... whose classifier starts elsewhere
    model = DistillationModel(student, teacher)
    model.eval()  # BatchNorm on the running statistics, as at test time
    with torch.no_grad():
        before = (model(x)[1][:, :C].argmax(dim=1) == hard).float().mean()
    assert before < 1.0

    objective = DistillationObjective(C, temperature=1e-3)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(model, objective, x)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = model(x)[1][:, :C].argmax(dim=1)
    assert torch.equal(after, hard)
