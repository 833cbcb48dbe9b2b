import copy
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


def test_lars_foreach_equals_the_per_parameter_loop():
    """Multi-tensor LARS (the default) and the per-parameter loop: same updates to rounding, over steps that include
    a first step, weight decay, an excluded group, and a zero gradient without weight decay (trust ratio 1)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.Linear(7, 3))
    twin = copy.deepcopy(model)

    def groups(m):
        decay, no_decay = (g["params"] for g in param_groups(m, 1e-3))
        return [{"params": decay[:1], "weight_decay": 1e-3, "lars_exclude": False},
                {"params": decay[1:], "weight_decay": 0.0, "lars_exclude": False},  # the last Linear's weight
                {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]

    opts = [LARS(groups(m), lr=0.5, momentum=0.9, foreach=f) for m, f in ((model, True), (twin, False))]
    for step in range(4):
        x = torch.randn(8, 5, generator=torch.Generator().manual_seed(step))
        for m, opt in zip((model, twin), opts):
            m(x).square().mean().backward()
            if step == 1:
                m[2].weight.grad.zero_()  # ||g|| = 0: trust ratio 1, the update is momentum alone
            opt.step()
            opt.zero_grad(set_to_none=True)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(opts[0].state[p]["momentum_buffer"], opts[1].state[q]["momentum_buffer"],
                                   rtol=1e-6, atol=1e-7)
    assert LARS(model.parameters(), lr=0.1).foreach is None  # auto: multi-tensor on CUDA, the loop on CPU
