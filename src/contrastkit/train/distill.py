"""Distillation as a training objective: a frozen fine-tuned teacher, a student, one loss (SimCLRv2 Sec. 2.3).

The training loop runs distillation like any other method: the model's ``forward(x)`` returns ``(h, outputs)``
and the objective maps ``outputs`` (N, V, D) and the labels to a loss. Here the model is a
:class:`DistillationModel`, whose outputs are the student's and the teacher's logits side by side, computed
from the *same* augmented views in one forward call (D = 2C), and the objective is
:class:`DistillationObjective`, which splits them and applies :class:`~contrastkit.losses.DistillationLoss`.
Gradient caching works unchanged: the teacher half of the cached outputs receives no gradient.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..finetuned import FineTunedNetwork
from ..losses import DistillationLoss

__all__ = ["DistillationModel", "DistillationObjective", "build_distillation_model",
           "build_distill_objective", "distill_labels"]


class DistillationModel(nn.Module):
    """A student network trained to match a frozen teacher.

    The teacher is held outside the module tree: it is not in ``parameters()`` (the optimiser never sees it),
    not in ``state_dict()`` (checkpoints hold the student), and not wrapped by DistributedDataParallel; it
    follows the student's device and dtype (:meth:`_apply`) and stays in eval mode (:meth:`train`), so its
    BatchNorm layers use their running statistics and its predictions are deterministic.

    Args:
        student: the network being trained (encoder, head prefix, classifier).
        teacher: the fine-tuned network whose predictions are the targets.

    Raises:
        ValueError: the two networks have different numbers of classes.

    Shape:
        x (N, 3, H, W) -> h (N, F) of the student, outputs (N, 2C): student logits, then teacher logits.
    """

    def __init__(self, student: FineTunedNetwork, teacher: FineTunedNetwork) -> None:
        super().__init__()
        if student.num_classes != teacher.num_classes:
            raise ValueError(f"the student has {student.num_classes} classes but the teacher has "
                             f"{teacher.num_classes}")
        self.student = student
        teacher.requires_grad_(False)
        object.__setattr__(self, "_teacher", teacher.eval())  # not a registered submodule (see above)

    @property
    def teacher(self) -> FineTunedNetwork:
        return self._teacher

    @property
    def encoder(self) -> nn.Module:
        """The student's encoder f (what the kNN monitor, evaluation and export use)."""
        return self.student.encoder

    @property
    def num_classes(self) -> int:
        return self.student.num_classes

    def train(self, mode: bool = True) -> "DistillationModel":
        super().train(mode)
        self._teacher.eval()
        return self

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> "DistillationModel":
        super()._apply(fn, *args, **kwargs)
        self._teacher._apply(fn, *args, **kwargs)  # .to(device / dtype / memory format) moves the teacher too
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.student.encoder(x)  # (N, F)
        student = self.student.classifier(self.student.head(h))  # (N, C)
        with torch.no_grad():
            teacher = self._teacher(x)  # (N, C), the same views
        return h, torch.cat([student, teacher.to(student.dtype)], dim=1)  # (N, 2C)


class DistillationObjective(nn.Module):
    """The training loop's objective for ``method="distill"``: ``objective(outputs, labels) -> loss``.

    Args:
        num_classes: C; ``outputs`` holds 2C values per view (student logits, then teacher logits).
        temperature: tau of :class:`~contrastkit.losses.DistillationLoss`.
        labelled_weight: A of :class:`~contrastkit.losses.DistillationLoss` (0: distillation alone).

    Shape:
        outputs (N, V, 2C), labels (N,) (-1: unlabelled) or None -> scalar; every view of an image is a sample.
    """

    method = "distill"
    pairwise = False

    def __init__(self, num_classes: int, temperature: float = 1.0, labelled_weight: float = 0.0) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        # check_values=False: non-finite outputs become a NaN loss below, decided on the device (no read-back)
        self.loss = DistillationLoss(temperature, labelled_weight, check_values=False)

    @property
    def needs_labels(self) -> bool:
        return self.loss.labelled_weight > 0

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        c = self.num_classes
        if outputs.ndim != 3 or outputs.shape[2] != 2 * c:
            raise ValueError(f"distillation outputs must have shape (N, V, 2C) = (N, V, {2 * c}) (student and "
                             f"teacher logits), got {tuple(outputs.shape)}")
        n, v, _ = outputs.shape
        finite = torch.isfinite(outputs).all()  # () bool
        outputs = torch.where(finite, outputs, torch.zeros((), dtype=outputs.dtype, device=outputs.device))
        student = outputs[..., :c].reshape(n * v, c)  # (N*V, C)
        teacher = outputs[..., c:].reshape(n * v, c)  # (N*V, C)
        y = labels[:, None].expand(n, v).reshape(n * v) if (labels is not None and self.needs_labels) else None
        loss = self.loss(student, teacher, y)
        return torch.where(finite, loss, torch.full((), float("nan"), dtype=loss.dtype, device=loss.device))


# ---------------------------------------------------------------------------------------------------------------
# ``method="distill"`` in the training loop: model, objective and labels (the job is contrastkit.distillation).

def _load_teacher(path: str) -> tuple[FineTunedNetwork, dict[str, Any]]:
    from ..finetuned import load_finetuned

    return load_finetuned(path)


def build_distillation_model(cfg, image_size: int) -> DistillationModel:
    """The teacher of ``cfg.teacher`` and a freshly initialised student of ``cfg``'s architecture (from h).

    Raises:
        CheckpointError: the teacher is not a fine-tuned checkpoint.
        ValueError: the run's input size differs from the teacher's.
    """
    from ..finetuned import build_finetuned_network

    teacher, info = _load_teacher(cfg.teacher)
    size = int(info["meta"].get("image_size", 32))
    if size != image_size:
        raise ValueError(f"the teacher {cfg.teacher} takes {size} px inputs but this run's crops are {image_size} "
                         f"px; pass --size {size}")
    student = build_finetuned_network(cfg.to_dict(), teacher.num_classes, image_size, head_layer=0)
    return DistillationModel(student, teacher)


def build_distill_objective(cfg) -> DistillationObjective:
    _, info = _load_teacher(cfg.teacher)
    return DistillationObjective(int(info["classifier"]["num_classes"]), cfg.distill_temperature,
                                 cfg.labelled_weight)


def distill_labels(cfg, targets: list[int]) -> torch.Tensor:
    """Training labels for distillation: all -1 (unlabelled), except, with ``labelled_weight`` > 0, the
    teacher's own fine-tuning subset, which keeps its true labels.

    Raises:
        ValueError: ``labelled_weight`` > 0 with data other than the ones the teacher was fine-tuned on.
    """
    labels = torch.full((len(targets),), -1, dtype=torch.long)
    if cfg.labelled_weight == 0:
        return labels
    _, info = _load_teacher(cfg.teacher)
    result = info.get("result", {})
    indices = result.get("indices")
    if indices is None or result.get("data") != cfg.data:
        raise ValueError(f"--labelled-weight > 0 uses the teacher's labelled subset, so --data must be the data "
                         f"it was fine-tuned on ({result.get('data')!r}); got {cfg.data!r}")
    idx = torch.as_tensor(indices, dtype=torch.long)
    if idx.numel() and int(idx.max()) >= len(targets):
        raise ValueError(f"the teacher's labelled subset indexes {int(idx.max()) + 1} images but {cfg.data} has "
                         f"{len(targets)} training images")
    labels[idx] = torch.as_tensor(targets, dtype=torch.long)[idx]
    return labels
