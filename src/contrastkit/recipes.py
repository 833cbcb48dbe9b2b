"""Named training recipes: sets of pretraining options chosen by a measured sweep.

``contrastkit pretrain --recipe NAME`` applies a recipe before the YAML file and the flags (which override it).
Each recipe says what it is for and where its numbers come from (benchmarks/README.md, "Accuracy per minute").
"""
from __future__ import annotations

from typing import Any

__all__ = ["RECIPES", "get_recipe"]

# SimCLR on 32-px data (CIFAR) for a fixed CPU-sized budget: a CIFAR-stem ResNet-18 of base width 16, batched
# augmentation on the device, the schedule spanning the time budget. Chosen by the sweep in benchmarks/README.md
# ("Accuracy per minute"); use with --time-budget-s (seconds of training). In fp32, as it was measured (its figures
# stay reproducible now that --precision auto picks bf16 on some CPUs).
_CIFAR_BUDGET: dict[str, Any] = dict(
    method="simclr", encoder="resnet18", width=0.25, cifar_stem="on", proj_hidden_dim=512, proj_dim=128,
    preset="cifar", augment_on="device", channels_last="on", schedule="time", epochs=100,
    batch_size=64, lr=0.6, lr_scaling="linear", temperature=0.2, crop_scale=(0.2, 1.0), color_strength=0.5,
    warmup_epochs=0.02, weight_decay=5e-4, optimizer="sgd", knn_every=0, precision="fp32",
)
# Its successor for CPUs (issue 27; benchmarks/README.md, "Accuracy per minute: the levers"): --precision auto, which
# is bf16 autocast where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16; train/precision.py) and fp32
# elsewhere. On the validation split at an equal modelled budget bf16 gave kNN 0.530 against fp32's 0.494, and 0.495
# at fp32's own number of steps.
_CIFAR_BUDGET_2 = dict(_CIFAR_BUDGET, precision="auto")
# What the README runs (issue 27; benchmarks/README.md, "lr and tau at 1,800 modelled seconds"): 16-px views for the
# first half of the budget and 24-px views to 80 % of it (cheaper steps, more images: augment/resolution.py), with
# half the peak learning rate. On the validation split it scored kNN 0.564 against cifar-budget-2's 0.530 at 390
# modelled seconds, and 0.661 against 0.643 at 1,800.
_CIFAR_BUDGET_3 = dict(_CIFAR_BUDGET_2, lr=0.3, size_schedule="16:0.5,24:0.8")
# For budgets of half an hour and more (issue 27; benchmarks/README.md, "Crop scale and batch size"): cifar-budget-3
# with batches of 128 (the peak learning rate scales with it). A 16- or 24-px step of 128 images costs less per image
# than two of 64 on two cores, and the loss sees twice the negatives: on the validation split it scored kNN 0.677
# against cifar-budget-3's 0.661 at 1,800 modelled seconds.
_CIFAR_BUDGET_4 = dict(_CIFAR_BUDGET_3, batch_size=128)
# cifar-budget-4 with 24-px views to the end instead of 32-px views over the last fifth (issue 27; benchmarks/README.md,
# "Without the 32-px phase"). Its 60-minute run peaked at the end of the 24-px phase and lost a little over the
# 32-px one; on the validation split this scored kNN 0.691 against cifar-budget-4's 0.677 at 1,800 modelled
# seconds. The last 0.1% of the budget (a few steps) is at the data's 32 px, which re-estimates the batch-norm
# statistics at the size evaluation uses; it is what was measured.
_CIFAR_BUDGET_5 = dict(_CIFAR_BUDGET_4, size_schedule="16:0.5,24:0.999")
# cifar-budget-5 without its few 32-px steps: 24-px views to the very end (issue 27; benchmarks/README.md, "Around
# cifar-budget-5 at 1,800 modelled seconds", J1). On the validation split it scored kNN 0.6944 against 0.6912 at 1,800
# modelled seconds, in two runs identical step for step until the last 11 (their logged losses agree at every
# logged step), so the difference is those steps' and not a seed's. With the learning rate near zero they change
# little but the batch-norm statistics: most likely statistics of 24-px views evaluate 32-px images better than ones
# re-estimated at 32 px (not measured apart).
_CIFAR_BUDGET_6 = dict(_CIFAR_BUDGET_5, size_schedule="16:0.5,24:1")

RECIPES: dict[str, dict[str, Any]] = {
    "cifar-budget": _CIFAR_BUDGET, "cifar-budget-2": _CIFAR_BUDGET_2, "cifar-budget-3": _CIFAR_BUDGET_3,
    "cifar-budget-4": _CIFAR_BUDGET_4, "cifar-budget-5": _CIFAR_BUDGET_5, "cifar-budget-6": _CIFAR_BUDGET_6,
}


def get_recipe(name: str) -> dict[str, Any]:
    """The options of recipe ``name`` (a copy).

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    return dict(RECIPES[name])
