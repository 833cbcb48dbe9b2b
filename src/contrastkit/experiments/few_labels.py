"""few-labels: SimCLRv2's three stages on CIFAR-10 with 1% and 10% of the labels.

SimCLRv2 (Chen et al. 2020, arXiv 2006.10029) pretrains with a 3-layer projection head, fine-tunes from the
head's first layer on the labelled subset, then distils the fine-tuned network into a student on all the
training images, labels unused (Sec. 2). The experiment compares, at each label fraction (the class-balanced
subsets of :func:`~contrastkit.evaluate.class_balanced_subset`):

* ``scratch``: supervised training from random initialisation on the labelled subset (the same fine-tuning
  recipe, a fresh encoder);
* ``simclr-h``: SimCLR (2-layer head), fine-tuned from h;
* ``head3-h``: SimCLR with a 3-layer head, fine-tuned from h (separates the head's depth from the layer);
* ``head3-layer1``: the same pretraining, fine-tuned from the head's first layer (SimCLRv2);
* ``distilled``: that network self-distilled (same encoder, classifier from h, fresh initialisation) on every
  training image of the budget's data, with the pretraining augmentation, one view per image.

Accuracies are the classifier's own top-1 on the test split. Stages are stored under ``OUT/stages/`` and
skipped when repeated with the same plan; the two pretraining runs are ordinary experiment runs (also
scored by linear and kNN evaluation on h).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from ..evaluate.protocols import run_protocol, save_finetuned_result
from ..models import load_checkpoint_model
from ..runtime.ownership import claim, remove_owned
from ..train import pretrain
from .budgets import Budget
from .records import cached, config_fingerprint
from .spec import RunSpec, Summary

__all__ = ["FRACTIONS", "ROWS", "few_labels_runs", "few_labels_summary", "run_few_labels", "PAPER_FEW_LABELS"]

FRACTIONS = (0.01, 0.1)
ROWS = ("scratch", "simclr-h", "head3-h", "head3-layer1", "distilled")
ROW_NAMES = {"scratch": "supervised from scratch", "simclr-h": "SimCLR (2-layer head), fine-tuned from h",
             "head3-h": "3-layer head, fine-tuned from h", "head3-layer1": "3-layer head, fine-tuned from layer 1",
             "distilled": "layer-1 network self-distilled on all training images"}

#: Fine-tuning epochs per label fraction, and distillation settings, by budget. SimCLR App. B.5 fine-tunes
#: 60 epochs on 1% and 30 on 10%; the ``cpu`` budget shortens the 10% runs, which hold 10x the images.
STAGES: dict[str, dict[str, Any]] = {
    "smoke": {"finetune_epochs": {0.01: 2, 0.1: 2}, "distill": {"epochs": 1, "max_steps": 2}},
    "cpu": {"finetune_epochs": {0.01: 30, 0.1: 20}, "distill": {"epochs": 8}},
    "gpu": {"finetune_epochs": {0.01: 60, 0.1: 30}, "distill": {"epochs": 100}},
}

#: Published numbers, ImageNet, ResNet-50 (top-1 %), each with where it was read. SimCLRv2 Table 1's ResNet-50
#: (1x, no selective kernels) row was read from the authors' README (google-research/simclr, "corresponding to
#: those in Table 1"); 73.9 / 77.5 is the abstract's ResNet-50 after the whole pipeline, distilled from a bigger
#: teacher (ResNet-152 3x with selective kernels), not self-distilled.
PAPER_FEW_LABELS: dict[str, Any] = {
    "source": "SimCLR (docs/SEED.md: ResNet-50 fine-tuned from h, 48.3 / 65.6), SimCLRv2 Table 1 (ResNet-50 1x, "
              "3-layer head, fine-tuned: 57.9 / 68.4) and the SimCLRv2 abstract (ResNet-50 distilled from a bigger "
              "teacher: 73.9 / 77.5)",
    "values": {("simclr-h", 0.01): 48.3, ("simclr-h", 0.1): 65.6, ("head3-layer1", 0.01): 57.9,
               ("head3-layer1", 0.1): 68.4, ("distilled", 0.01): 73.9, ("distilled", 0.1): 77.5},
}


def _percent(fraction: float | None) -> float | None:
    """A fraction as a percentage with two decimals (None stays None: top-5 of 5 classes or fewer)."""
    return None if fraction is None else round(100 * fraction, 2)


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g}pct"


def few_labels_runs(budget: Budget) -> list[RunSpec]:
    """The two pretraining runs: SimCLR with a 2-layer and with a 3-layer head."""
    return [RunSpec(key=f"simclr-head{k}", labels={"head_layers": k}, config={"method": "simclr", "head_layers": k})
            for k in (2, 3)]


def _value(by: dict, row: str, fraction: float) -> float | None:
    r = by.get((row, fraction))
    return None if r is None else r.get("metrics", {}).get("top1")


def _verdict_part(name: str, pairs: list[tuple[float | None, float | None]]) -> tuple[str, str]:
    """'yes' / 'partly' / 'no' for "a beats b" at every fraction, and the margins in words."""
    known = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not known:
        return "not run", f"{name}: no finished runs"
    wins = sum(a > b for a, b in known)
    word = "yes" if wins == len(known) == len(pairs) else "partly" if wins else "no"
    margins = ", ".join(f"{a - b:+.1f}" for a, b in known)
    return word, f"{name}: {word} ({margins} points at 1% / 10%)"


def few_labels_summary(results: list[dict[str, Any]], paper: dict[str, Any] | None) -> Summary:
    """Rows per stage (top-1 at 1% and 10% beside the paper's), one verdict per claim, a bar figure."""
    by = {(r["labels"]["row"], r["labels"]["fraction"]): r for r in results if "row" in r.get("labels", {})}
    values = (paper or {}).get("values", {})
    rows = []
    for row in ROWS:
        entry: dict[str, Any] = {"stage": ROW_NAMES[row]}
        for f in FRACTIONS:
            entry[f"{100 * f:g}% labels (%)"] = _value(by, row, f)
        for f in FRACTIONS:
            entry[f"paper {100 * f:g}% (%)"] = values.get((row, f))
        rows.append(entry)
    parts = [
        _verdict_part("fine-tuning beats scratch", [(_value(by, "simclr-h", f), _value(by, "scratch", f))
                                                   for f in FRACTIONS]),
        _verdict_part("head layer 1 beats h", [(_value(by, "head3-layer1", f), _value(by, "simclr-h", f))
                                              for f in FRACTIONS]),
        _verdict_part("distillation improves on the fine-tuned teacher",
                      [(_value(by, "distilled", f), _value(by, "head3-layer1", f)) for f in FRACTIONS]),
    ]
    depth = [(_value(by, "head3-layer1", f), _value(by, "head3-h", f)) for f in FRACTIONS]
    _, depth_words = _verdict_part("within the 3-layer head, layer 1 beats h", depth)
    verdict = ("; ".join(p[1] for p in parts) + f". ({depth_words}.) Paper (ImageNet, ResNet-50): each stage "
               "helps (1% / 10%: SimCLR 48.3 / 65.6 fine-tuned from h; SimCLRv2 57.9 / 68.4 fine-tuned, Table 1; "
               "73.9 / 77.5 distilled from a bigger teacher, abstract). One seed per row: differences of a few "
               "points are within run-to-run noise.")
    labels = [f"{100 * f:g}% labels" for f in FRACTIONS]
    figure = {"kind": "bars", "labels": labels, "xlabel": "label fraction",
              "panels": [{"title": "ours (classifier top-1)",
                          "series": {row: [_value(by, row, f) for f in FRACTIONS] for row in ROWS}},
                         {"title": "paper (ImageNet, ResNet-50)",
                          "series": {row: [values.get((row, f)) for f in FRACTIONS]
                                     for row in ("simclr-h", "head3-layer1", "distilled")}}]}
    return Summary(rows, verdict, figure)


# ---------------------------------------------------------------------------------------------------------------


def _stage(key: str, labels: dict[str, Any], fingerprint: dict[str, Any], out: Path, work) -> dict[str, Any]:
    """Run ``work() -> metrics`` unless ``OUT/stages/<key>.json`` holds the same fingerprint."""
    return cached(out / "stages" / f"{key}.json", fingerprint, work, {"key": key, "labels": labels})


def _finetune_stage(row, fraction, pre, evaluator, epochs, out, teacher_path=None) -> dict[str, Any]:
    """One fine-tuning stage on a pretraining run's checkpoint (``scratch``: a fresh encoder instead)."""
    layer = 1 if row == "head3-layer1" else 0
    fingerprint = {"pretrain": pre.fingerprint(), "row": row, "fraction": fraction, "epochs": epochs,
                   "from_head_layer": layer, "seed": evaluator.seed}

    def work() -> dict[str, Any]:
        model, meta, config = load_checkpoint_model(pre.out / "last.pt", evaluator.device)
        data = evaluator.data_of(meta)
        torch.manual_seed(evaluator.seed)
        res = run_protocol("finetune", model, data, label_fraction=fraction, from_scratch=row == "scratch",
                           epochs=epochs, device=evaluator.device, seed=evaluator.seed, cfg=config,
                           from_head_layer=layer, keep_model=teacher_path is not None)
        if teacher_path is not None:
            claim(Path(teacher_path).parent, [Path(teacher_path).name, Path(teacher_path).name + ".tmp"],
                  "experiment", kind="experiment")
            save_finetuned_result(teacher_path, res, meta, data, pre.out / "last.pt", meta.data, evaluator.seed)
        m = res["metrics"]
        return {"top1": round(100 * m["top1"], 2), "top5": _percent(m["top5"]), "n_train": m["n_train"],
                "epochs": epochs}

    record = _stage(f"{row}-{_pct(fraction)}", {"row": row, "fraction": fraction}, fingerprint, out, work)
    if teacher_path is not None and not Path(teacher_path).is_file():  # stored result, teacher file lost
        remove_owned(out / "stages", [f"{row}-{_pct(fraction)}.json"])
        return _finetune_stage(row, fraction, pre, evaluator, epochs, out, teacher_path)
    return record


def _distill_stage(fraction, pre, teacher_record, teacher_path, settings, out, progress) -> dict[str, Any]:
    cfg = dataclasses.replace(pre.config, method="distill", teacher=str(teacher_path), n_views=1, knn_every=0,
                              out=str(out / "runs" / f"distill-{_pct(fraction)}"), progress=progress,
                              overwrite=True, **settings)
    fingerprint = {"config": config_fingerprint(cfg), "teacher": teacher_record["fingerprint"]}

    def work() -> dict[str, Any]:
        summary = pretrain(cfg)
        return {"top1": round(100 * summary["student_top1"], 2), "top5": _percent(summary["student_top5"]),
                "steps": summary["global_step"], "train_time_s": summary["train_time_s"]}

    return _stage(f"distilled-{_pct(fraction)}", {"row": "distilled", "fraction": fraction}, fingerprint, out, work)


def run_few_labels(experiment, budget: Budget, runs, evaluator, out: Path, progress: bool) -> list[dict[str, Any]]:
    """Every stage of the experiment after its two pretraining runs (``runs``, finished); returns the records."""
    settings = STAGES.get(budget.name, STAGES["cpu" if budget.name == "gpu" else "smoke"])
    by_key = {r.key: r for r in runs}
    head2, head3 = by_key["simclr-head2"], by_key["simclr-head3"]
    records = []
    for fraction in FRACTIONS:
        epochs = settings["finetune_epochs"][fraction]
        records.append(_finetune_stage("scratch", fraction, head2, evaluator, epochs, out))
        records.append(_finetune_stage("simclr-h", fraction, head2, evaluator, epochs, out))
        records.append(_finetune_stage("head3-h", fraction, head3, evaluator, epochs, out))
        teacher_path = out / "runs" / f"teacher-{_pct(fraction)}.pt"
        teacher = _finetune_stage("head3-layer1", fraction, head3, evaluator, epochs, out, teacher_path)
        records.append(teacher)
        records.append(_distill_stage(fraction, head3, teacher, teacher_path, settings["distill"], out,
                                      progress and budget.runs_progress))
    return records
