"""Distillation as a job: train a student on a fine-tuned teacher with the training loop, then save and score it.

The loop's side (the student-and-teacher model, the objective, the labels) is :mod:`contrastkit.train.distill`;
this module runs the loop with ``method="distill"`` and turns the result into a fine-tuned checkpoint
(:mod:`contrastkit.finetuned`) scored on the data's test split. ``contrastkit distill`` calls :func:`distill`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .evaluate.classify import classifier_accuracy
from .finetuned import FineTunedNetwork, load_finetuned, save_finetuned
from .train.checkpoint import load_checkpoint
from .train.distill import build_distillation_model

__all__ = ["distill", "student_defaults"]


def student_defaults(teacher: str) -> dict[str, Any]:
    """Options of a self-distillation student: the teacher's encoder, width, stem, preset and input size."""
    _, info = load_finetuned(teacher)
    cfg, meta = info["config"], info["meta"]
    out = {k: cfg[k] for k in ("encoder", "width", "cifar_stem") if k in cfg}
    if meta.get("preset"):
        out["preset"] = meta["preset"]
    if meta.get("image_size"):
        out["size"] = int(meta["image_size"])
    return out


def distill(cfg) -> dict[str, Any]:
    """Train a student on a teacher's softened predictions with the training loop; write ``OUT/student.pt``.

    ``cfg.method`` must be ``"distill"``. The loop writes what a pretraining run writes (``last.pt`` holds the
    student); the student is then saved as a fine-tuned checkpoint (:mod:`contrastkit.finetuned`) and, when
    the data have a labelled test split, its classifier is scored there.

    Returns:
        The loop's summary plus ``student`` (the checkpoint's path), ``student_top1`` / ``student_top5`` (or
        None) and ``teacher_top1`` (the teacher's reported accuracy).
    """
    if cfg.method != "distill":
        raise ValueError(f"distill() runs --method distill, got {cfg.method!r}")
    from .runner import evaluation_data
    from .train import pretrain

    summary = pretrain(cfg)
    if summary.get("rank", 0) != 0:
        return summary
    out = Path(cfg.out).expanduser()
    state = load_checkpoint(out / "last.pt")
    _, info = load_finetuned(cfg.teacher)
    model = build_distillation_model(cfg, int(state["meta"]["image_size"]))
    model.load_state_dict(state["model"], strict=True)
    student: FineTunedNetwork = model.student.eval()
    meta = state["meta"]
    scores = {"top1": None, "top5": None}
    try:
        data = evaluation_data(cfg.data, meta, cfg.data_root, seed=cfg.seed, num_workers=0)
    except ValueError:  # unlabelled data: nothing to score on
        data = None
    if data is not None and data["num_classes"] == student.num_classes:
        scores = classifier_accuracy(student, data["test"], student.num_classes, batch_size=256)
    result = {"kind": "distill", "top1": scores["top1"], "top5": scores["top5"], "data": cfg.data,
              "teacher": str(cfg.teacher), "teacher_top1": info["result"].get("top1"),
              "distill_temperature": cfg.distill_temperature, "labelled_weight": cfg.labelled_weight,
              "global_step": summary["global_step"], "source_checkpoint": str(out / "last.pt")}
    path = save_finetuned(out / "student.pt", student, cfg.to_dict(), meta, list(info["classifier"]["classes"]),
                          result)
    summary.update(student=str(path), student_top1=scores["top1"], student_top5=scores["top5"],
                   teacher_top1=info["result"].get("top1"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary
