import math

import pytest
import torch
from torch import nn

from contrastkit import build_model
from contrastkit.train.optim import LARS, build_optimizer, param_groups, scaled_lr, warmup_cosine


def test_param_groups_exclude_biases_and_norm_layers():
    model = build_model("resnet18", cifar_stem=True, width=0.125)
    decay, no_decay = param_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    norm_ids = {id(p) for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))
                for p in m.parameters(recurse=False)}
    bias_ids = {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
    decay_ids = {id(p) for p in decay["params"]}
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert norm_ids | bias_ids <= no_decay_ids
    assert not (decay_ids & (norm_ids | bias_ids))
    assert all(p.ndim >= 2 for p in decay["params"])  # conv and linear weights only
    assert len(decay_ids) + len(no_decay_ids) == len(list(model.parameters()))


def test_warmup_then_cosine_schedule():
    total, warm = 100, 10
    values = [warmup_cosine(s, total, warm) for s in range(total)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(values[:9], values[1:10]))  # rising during warm-up
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # then decaying
    assert values[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert warmup_cosine(total, total, warm) == pytest.approx(0.0)
    assert warmup_cosine(total, total, warm, min_ratio=0.1) == pytest.approx(0.1)


def test_lr_scaling_rules():
    assert scaled_lr(0.3, 4096, "linear") == pytest.approx(4.8)  # SimCLR Sec. 2.2
    assert scaled_lr(0.075, 4096, "sqrt") == pytest.approx(4.8)  # SimCLR App. B.1
    assert scaled_lr(0.1, 512, "none") == 0.1
    with pytest.raises(ValueError, match="linear, sqrt or none"):
        scaled_lr(0.1, 512, "cubic")


def test_lars_trust_ratio_and_exclusion():
    w = nn.Parameter(torch.full((4, 4), 2.0))
    b = nn.Parameter(torch.ones(4))
    opt = LARS([{"params": [w], "weight_decay": 0.0, "lars_exclude": False},
                {"params": [b], "weight_decay": 0.0, "lars_exclude": True}], lr=1.0, momentum=0.0, eta=0.001)
    w.grad = torch.full((4, 4), 0.5)
    b.grad = torch.full((4,), 0.5)
    opt.step()
    # trust = eta * ||w|| / ||g|| = 0.001 * 8 / 2 = 0.004 -> step 0.5 * 0.004
    assert torch.allclose(w, torch.full((4, 4), 2.0 - 0.002))
    assert torch.allclose(b, torch.full((4,), 0.5))  # plain SGD step for excluded parameters


def test_build_optimizer_names():
    model = nn.Linear(3, 2)
    assert isinstance(build_optimizer(model, "sgd", 0.1, 0.9, 1e-4), torch.optim.SGD)
    assert isinstance(build_optimizer(model, "lars", 0.1, 0.9, 1e-4), LARS)
    with pytest.raises(ValueError, match="sgd or lars"):
        build_optimizer(model, "adamw", 0.1, 0.9, 0.0)
