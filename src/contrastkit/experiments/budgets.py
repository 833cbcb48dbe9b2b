"""Budgets: how big the runs of an experiment are (``smoke``, ``cpu``, ``gpu``).

A :class:`Budget` fixes everything that is not the object of an experiment:
the default data, an optional class-balanced subset of it, the encoder and
its width, the schedule, and the evaluation recipe. Experiments then vary one
thing (a loss, a temperature, a head) on top of :attr:`Budget.base`.

* ``smoke``: seconds per run on a 200-image subset of the offline ``digits``
  at 16 px, two steps of a width-0.125 ResNet-18; for tests and for checking
  that a command works, not for conclusions.
* ``cpu``: sized for a shared 2-core machine. A 10,000-image class-balanced
  subset of CIFAR-10 (1,000 per class; 5,000 test images; ``--data cifar10`` by
  default, the docs' figures from the JPEG folder of CONTRIBUTING.md), a CIFAR-stem ResNet-18 of width 0.25, one to eight epochs at batch
  128, one torch thread. Measured on 2 cores shared with other jobs: a SimCLR
  step at batch 128 takes 1.7 to 3 s, an epoch of the subset 2.3 to 4 minutes;
  each experiment is sized for about 40 to 50 minutes.
* ``gpu``: the papers' recipes as far as one GPU allows: full CIFAR-10,
  ResNet-18 at full width, 200 epochs (SimCLR's ablations use 100 epochs of
  ImageNet, Sec. 3-5; SupCon's CIFAR runs 1000), batch 512. Sized, not run here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Budget", "BUDGETS", "get_budget"]


@dataclass(frozen=True)
class Budget:
    """The size of every run of an experiment.

    Attributes:
        name: ``smoke``, ``cpu`` or ``gpu``.
        default_data: data used when ``run_experiment`` gets ``data=None``.
        train_per_class: keep this many training images per class (a seeded,
            class-balanced subset materialised as a folder), or None for all.
        test_per_class: the same for the test split.
        base: :class:`~contrastkit.config.PretrainConfig` fields shared by all
            runs (the experiment's own settings are applied on top).
        per_experiment: further fields for one experiment, by its name (for
            example fewer epochs for the 15-run augmentation grid).
        linear_epochs: epochs of the linear protocol on frozen features.
        runs_progress: show the pretraining progress bar of each run under the
            bar over runs.
        threads: torch intra-op threads while the experiment runs (restored
            afterwards), or None to leave torch's setting. On a shared machine
            one thread is several times faster than two (no spinning OpenMP
            threads competing with other jobs): measured 1.0 s against 4 to 7 s
            for a training step of 256 views of 32 px at width 0.25.
    """

    name: str
    default_data: str
    train_per_class: int | None
    test_per_class: int | None
    base: dict[str, Any]
    per_experiment: dict[str, dict[str, Any]] = field(default_factory=dict)
    linear_epochs: int = 100
    runs_progress: bool = False
    threads: int | None = None

    def config_fields(self, experiment: str) -> dict[str, Any]:
        """The PretrainConfig fields of this budget for one experiment (base + its overrides)."""
        fields = dict(self.base)
        fields.update(self.per_experiment.get(experiment, {}))
        return fields


# preset="cifar" explicitly: an image folder has no known native size, and "auto" would pick the
# ImageNet preset (224 px crops, blur) for it.
_COMMON = dict(preset="cifar", encoder="resnet18", cifar_stem="on", optimizer="sgd", lr_scaling="linear", momentum=0.9,
               weight_decay=5e-4, knn_every=0, augment_on="device")

BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        name="smoke",
        default_data="digits",
        train_per_class=20,
        test_per_class=10,
        base=dict(_COMMON, width=0.125, size=16, epochs=1, batch_size=32, max_steps=2, lr=0.1, num_workers=0,
                  crop_scale=(0.3, 1.0), log_every=1, progress=False),
        per_experiment={"batch-size": {"max_steps": 1}, "queue": {"batch_size": 64}},
        linear_epochs=3,
        threads=1,
    ),
    "cpu": Budget(
        name="cpu",
        default_data="cifar10",  # torchvision's, downloaded once (the docs' figures: the JPEG folder, CONTRIBUTING.md)
        train_per_class=1000,
        test_per_class=500,
        base=dict(_COMMON, width=0.25, size=32, epochs=3, batch_size=128, lr=0.5, num_workers=0,
                  crop_scale=(0.2, 1.0), log_every=10, progress=True),
        # Measured on 2 cores shared with other jobs (load 3 to 7), one thread: a SimCLR or SupCon step of
        # 128 images takes 1.0 to 3 s (less with channels_last), a cross-entropy step about 0.5 to 1.1 s, and
        # evaluating a run about 30 to 40 s. Measured wall times of each experiment (docs/claims.md):
        per_experiment={
            "augmentations": {"epochs": 1},  # 15 runs, measured 35 min
            "color-strength": {"epochs": 2},  # 5 SimCLR + 5 CE runs, measured 41 min
            "losses": {"epochs": 2},  # 10 runs, measured 50 min
            "projection-head": {"epochs": 5},  # 3 runs, measured 27 min (channels_last)
            "temperature": {"epochs": 3},  # 5 + 3 no-l2 runs, measured 38 + 10 min
            "batch-size": {"epochs": 4},  # 4 runs, measured 36 min
            "supcon-variants": {"epochs": 8},  # 2 runs, measured 27 min (channels_last)
            "supcon-vs-ce": {"epochs": 5},  # 3 runs: measured 40 min at load 5 to 7.5
            "few-labels": {"epochs": 8},  # 2 runs, 8 fine-tunings, 2 distillations (few_labels.py): measured 39-44 min
            # 2 runs of 5 minutes' training each, the schedule over that time (queue.py); the epochs only bound it
            "queue": {"batch_size": 64, "epochs": 20, "time_budget_s": 300.0, "schedule": "time"},
        },
        linear_epochs=100,
        runs_progress=True,
        threads=1,
    ),
    "gpu": Budget(
        name="gpu",
        default_data="cifar10",  # torchvision's, downloaded once (the docs' figures: the JPEG folder, CONTRIBUTING.md)
        train_per_class=None,
        test_per_class=None,
        base=dict(_COMMON, width=1.0, epochs=200, batch_size=512, lr=0.5, warmup_epochs=10, num_workers=4,
                  crop_scale=(0.08, 1.0), weight_decay=1e-4, log_every=50, progress=True),
        per_experiment={
            "augmentations": {"epochs": 100},  # 15 runs, as SimCLR Fig. 5 (100 epochs)
            "losses": {"epochs": 100},  # SimCLR Table 4: 100 epochs
            "temperature": {"epochs": 100},  # SimCLR Table 5: 100 epochs
            "supcon-vs-ce": {"epochs": 500},
            "queue": {"batch_size": 64, "epochs": 200, "time_budget_s": 1800.0, "schedule": "time"},
        },
        linear_epochs=100,
        runs_progress=True,
    ),
}


def get_budget(budget: str | Budget) -> Budget:
    """A budget by name (or the budget itself).

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    if isinstance(budget, Budget):
        return budget
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; known budgets: {', '.join(BUDGETS)}")
    return BUDGETS[budget]


def replace_budget(budget: Budget, **changes: Any) -> Budget:
    """A copy of a budget with some attributes changed (for tests and custom sizes)."""
    return dataclasses.replace(budget, **changes)
