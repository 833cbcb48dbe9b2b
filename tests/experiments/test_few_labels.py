"""experiment few-labels: the plan, the verdicts on synthetic stage records, and the smoke budget end to end."""
from __future__ import annotations

import json

import pytest

from contrastkit.experiments import execute, plan, run_experiment
from contrastkit.experiments.few_labels import FRACTIONS, ROWS, few_labels_summary
from contrastkit.models import load_checkpoint_model


@pytest.fixture(autouse=True)
def _isolated_subsets(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("CONTRASTKIT_SUBSET_ROOT", str(tmp_path_factory.mktemp("subsets")))


def test_plan_pretrains_a_two_and_a_three_layer_head():
    runs = plan("few-labels", "cpu")
    assert [(r.key, r.config.head_layers, r.config.method) for r in runs] == [
        ("simclr-head2", 2, "simclr"), ("simclr-head3", 3, "simclr")]
    assert {r.config.epochs for r in runs} == {8}


def _records(values):
    return [{"key": f"{row}-{f}", "status": "ok", "labels": {"row": row, "fraction": f}, "metrics": {"top1": v}}
            for (row, f), v in values.items()]


def test_summary_gives_one_verdict_per_claim():
    good = {(r, f): 40.0 + 5 * i + 10 * (f == 0.1) for i, r in enumerate(ROWS) for f in FRACTIONS}
    s = few_labels_summary(_records(good), None)
    assert [row["stage"] for row in s.rows][0] == "supervised from scratch" and len(s.rows) == len(ROWS)
    assert s.rows[0]["1% labels (%)"] == 40.0 and s.rows[4]["10% labels (%)"] == 70.0
    assert "fine-tuning beats scratch: yes" in s.verdict and "head layer 1 beats h: yes" in s.verdict
    assert "distillation improves on the fine-tuned teacher: yes" in s.verdict
    bad = dict(good)
    bad[("distilled", 0.01)] = 10.0  # worse than its teacher at 1% only
    bad[("scratch", 0.01)] = bad[("scratch", 0.1)] = 99.0
    s = few_labels_summary(_records(bad), None)
    assert "distillation improves on the fine-tuned teacher: partly" in s.verdict
    assert "fine-tuning beats scratch: no" in s.verdict
    assert "no finished runs" in few_labels_summary([], None).verdict


def test_smoke_run_end_to_end_then_resume(tmp_path, monkeypatch):
    out = tmp_path / "fl"
    results = run_experiment("few-labels", budget="smoke", out=out, device="cpu", progress=False)
    stored = json.loads((out / "results.json").read_text())
    assert stored["status"] == "done" and [r["key"] for r in stored["runs"]] == ["simclr-head2", "simclr-head3"]
    stages = {r["key"]: r for r in stored["stages"]}
    assert len(stages) == len(ROWS) * len(FRACTIONS)
    for r in stages.values():
        assert r["status"] == "ok" and 0 <= r["metrics"]["top1"] <= 100
    assert stages["scratch-1pct"]["metrics"]["n_train"] == 10 and stages["simclr-h-10pct"]["metrics"]["n_train"] == 20
    teacher, info, config = load_checkpoint_model(out / "runs" / "teacher-1pct.pt")
    assert teacher.from_head_layer == 1 and config["head_layers"] == 3
    top1 = info.finetuned["result"]["top1"]
    assert top1 * 100 == pytest.approx(stages["head3-layer1-1pct"]["metrics"]["top1"], abs=0.01)
    student, sinfo, _ = load_checkpoint_model(out / "runs" / "distill-1pct" / "student.pt")
    assert student.from_head_layer == 0 and sinfo.finetuned["result"]["kind"] == "distill"
    assert stages["distilled-1pct"]["metrics"]["steps"] == 2
    md = (out / "results.md").read_text()
    assert "## Stages" in md and "**Verdict.**" in md and "fine-tuning beats scratch" in md
    assert (out / "few-labels.png").read_bytes()[:4] == b"\x89PNG"
    assert [row["stage"] for row in results["rows"]][-1].startswith("layer-1 network self-distilled")

    def no_work(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(execute, "pretrain_with_augment", no_work)
    monkeypatch.setattr("contrastkit.experiments.few_labels.pretrain", no_work)
    monkeypatch.setattr("contrastkit.experiments.few_labels.run_protocol", no_work)
    again = run_experiment("few-labels", budget="smoke", out=out, device="cpu", progress=False)
    assert again["rows"] == results["rows"]
    assert len(again["resumed_runs"]) == 2 + len(stages)
