"""Distillation (SimCLRv2 Sec. 2.3): a student trained on a frozen fine-tuned teacher's softened predictions.

The training loop runs distillation like any other method: the model's ``forward(x)`` returns ``(h, outputs)``
and the objective maps ``outputs`` (N, V, D) and the labels to a loss. Here the model is a
:class:`DistillationModel`, whose outputs are the student's and the teacher's logits side by side, computed
from the *same* augmented views in one forward call (D = 2C), and the objective is
:class:`DistillationObjective`, which splits them and applies :class:`~contrastkit.losses.DistillationLoss`.
Gradient caching works unchanged: the teacher half of the cached outputs receives no gradient.

The teacher is loaded once per run (:func:`_build`). After training, the student is also written as a fine-tuned
checkpoint, ``OUT/student.pt``, and scored on the data's test split (:func:`_finish`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..evaluate.classify import classifier_accuracy
from ..evaluate.protocols import evaluation_data
from ..export.filekinds import export_kind
from ..losses import DistillationLoss
from ..models import CheckpointError, FineTunedNetwork, build_model, load_checkpoint_model, save_finetuned
from .base import DataInfo, Method, MethodParts

__all__ = ["DistillationModel", "DistillationObjective", "METHOD", "student_defaults", "load_teacher"]


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

    def __init__(self, num_classes: int, temperature: float = 1.0, labelled_weight: float = 0.0) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        # check_values=False: non-finite outputs give a non-finite loss for the loop's guard (no read-back)
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
        student = outputs[..., :c].reshape(n * v, c)  # (N*V, C)
        teacher = outputs[..., c:].reshape(n * v, c)  # (N*V, C)
        y = labels[:, None].expand(n, v).reshape(n * v) if (labels is not None and self.needs_labels) else None
        return self.loss(student, teacher, y)



def load_teacher(path: str | os.PathLike) -> tuple[FineTunedNetwork, Any]:
    """The fine-tuned network of ``path`` and its :class:`~contrastkit.models.CheckpointMeta`.

    Raises:
        CheckpointError: the file is missing or corrupt, holds a training run rather than a fine-tuned network, or
            is an export (the encoder alone, without the classifier whose predictions a student learns).
    """
    kind = export_kind(Path(path).expanduser())
    if kind is not None:
        raise CheckpointError(f"--teacher {path} is an export ({kind}), the encoder f alone: a student learns "
                              f"from a fine-tuned network's class predictions, which an export does not hold; "
                              f"give the fine-tuned checkpoint (*.pt) that 'contrastkit eval --protocol finetune "
                              f"... --save PATH' writes (an export is scored by 'contrastkit eval --protocol "
                              f"knn|linear|retrieval')")
    teacher, meta, _ = load_checkpoint_model(path)
    if meta.kind != "finetuned":
        raise CheckpointError(f"{path} is a pretraining checkpoint, not a fine-tuned network; write one with "
                              f"'contrastkit eval --protocol finetune ... --save PATH'")
    return teacher, meta


def student_defaults(teacher: str | os.PathLike) -> dict[str, Any]:
    """Options of a self-distillation student: the teacher's encoder, width, stem, preset and input size."""
    _, meta = load_teacher(teacher)
    out = {k: meta.config[k] for k in ("encoder", "width", "cifar_stem") if k in meta.config}
    if meta.preset:
        out["preset"] = meta.preset
    out["size"] = meta.image_size
    return out


def _labels(cfg: Any, data: DataInfo, teacher_meta: Any) -> torch.Tensor:
    """All -1 (unlabelled), except, with ``labelled_weight`` > 0, the teacher's own fine-tuning subset, which keeps
    its true labels.

    Raises:
        ValueError: ``labelled_weight`` > 0 with data other than the ones the teacher was fine-tuned on.
    """
    labels = torch.full((len(data.targets),), -1, dtype=torch.long)
    if cfg.labelled_weight == 0:
        return labels
    result = teacher_meta.finetuned["result"]
    indices = result.get("indices")
    if indices is None or result.get("data") != cfg.data:
        raise ValueError(f"--labelled-weight > 0 uses the teacher's labelled subset, so --data must be the data "
                         f"it was fine-tuned on ({result.get('data')!r}); got {cfg.data!r}")
    idx = torch.as_tensor(indices, dtype=torch.long)
    if idx.numel() and int(idx.max()) >= len(data.targets):
        raise ValueError(f"the teacher's labelled subset indexes {int(idx.max()) + 1} images but {cfg.data} has "
                         f"{len(data.targets)} training images")
    labels[idx] = torch.as_tensor(data.targets, dtype=torch.long)[idx]
    return labels


def _build(cfg: Any, data: DataInfo) -> MethodParts:
    """The teacher (loaded once), a freshly initialised student of the run's architecture, the objective and the
    labels.

    Raises:
        CheckpointError: the teacher is not a fine-tuned checkpoint.
        ValueError: the run's input size differs from the teacher's.
    """
    teacher, meta = load_teacher(cfg.teacher)
    if meta.image_size != data.image_size:
        raise ValueError(f"the teacher {cfg.teacher} takes {meta.image_size} px inputs but this run's crops are "
                         f"{data.image_size} px; pass --size {meta.image_size}")
    student = build_model(cfg, teacher.num_classes, data.image_size, head_layer=0)
    objective = DistillationObjective(teacher.num_classes, cfg.distill_temperature, cfg.labelled_weight)
    return MethodParts(DistillationModel(student, teacher), objective, _labels(cfg, data, meta),
                       extra={"teacher": meta})


def _finish(cfg: Any, parts: MethodParts, meta: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Write the student as a fine-tuned checkpoint (``OUT/student.pt``) and score it on the test split."""
    student: FineTunedNetwork = parts.model.student.eval()
    teacher = parts.extra["teacher"]
    scores: dict[str, Any] = {"top1": None, "top5": None}
    try:
        data = evaluation_data(cfg.data, meta["image_size"], meta["mean"], meta["std"], cfg.data_root,
                               seed=cfg.seed, num_workers=0)
    except ValueError:  # unlabelled data: nothing to score on
        data = None
    if data is not None and data["num_classes"] == student.num_classes:
        scores = classifier_accuracy(student, data["test"], student.num_classes, batch_size=256)
    out = Path(cfg.out).expanduser()
    result = {"kind": "distill", "top1": scores["top1"], "top5": scores["top5"], "data": cfg.data,
              "teacher": str(cfg.teacher), "teacher_top1": teacher.finetuned["result"].get("top1"),
              "distill_temperature": cfg.distill_temperature, "labelled_weight": cfg.labelled_weight,
              "global_step": summary["global_step"], "source_checkpoint": str(out / "last.pt")}
    path = save_finetuned(out / "student.pt", student, dict(cfg.to_dict()), meta,
                          list(teacher.finetuned["classifier"]["classes"]), result)
    return {"student": str(path), "student_top1": scores["top1"], "student_top5": scores["top5"],
            "teacher_top1": result["teacher_top1"]}


def _check(cfg: Any) -> None:
    if not cfg.teacher:
        raise ValueError("distillation needs --teacher FINETUNED.pt (written by 'contrastkit eval --protocol "
                         "finetune --save')")
    if not Path(cfg.teacher).expanduser().is_file():
        raise ValueError(f"--teacher {cfg.teacher} does not exist")
    if not cfg.distill_temperature > 0:
        raise ValueError(f"--distill-temperature must be a finite number > 0, got {cfg.distill_temperature}")
    if not 0 <= cfg.labelled_weight <= 1:
        raise ValueError(f"--labelled-weight must be in [0, 1] (0: distillation alone), got {cfg.labelled_weight}")


#: Options that do not apply to distillation: the loss is the distillation loss, the student has no projection head.
IGNORED = ("loss", "supcon_variant", "temperature", "margin", "l2_normalize", "semi_hard", "labeled_fraction",
           "head", "proj_dim", "proj_hidden_dim", "head_layers", "momentum_encoder", "momentum_ramp", "queue_size",
           "labels")

METHOD = Method(
    name="distill",
    summary="distillation: a student on a fine-tuned teacher's softened predictions (SimCLRv2; contrastkit distill)",
    build=_build,
    check=_check,
    options=("teacher", "distill_temperature", "labelled_weight"),
    ignored=IGNORED,
    min_views=1,
    finish=_finish,
    writes=("student.pt",),
)
