"""Against a real MLflow (a SQLite store in a temporary folder): params, metric history with global steps,
artifacts, and one run across a resume, with no step logged twice and the evaluation added."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def tracked(tracked_scenario):
    run = tracked_scenario / "run"
    ref = torch.load(run / "last.pt", weights_only=True)["tracking"]["mlflow"]
    client = mlflow.MlflowClient(ref["tracking_uri"])
    return run, client, client.get_run(ref["run_id"])


def test_one_run_holds_every_step_once_across_the_resumes(tracked):
    run, client, mlrun = tracked
    experiment = client.get_experiment_by_name("scenario")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [mlrun.info.run_id]
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for key, kind in (("loss", "step"), ("lr", "step"), ("images_per_s", "step"), ("knn_top1", "epoch")):
        prefix = "train" if kind == "step" else "epoch"
        history = client.get_metric_history(mlrun.info.run_id, f"{prefix}/{key}")
        steps = [m.step for m in history]
        assert sorted(steps) == [r["step"] for r in rows if r["kind"] == kind and key in r], key
    losses = {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, "train/loss")}
    first_epoch = {r["step"]: r["loss"] for r in rows if r["kind"] == "step" and r["step"] <= 3}
    assert losses.keys() >= first_epoch.keys() and all(abs(losses[s] - v) < 1e-6 for s, v in first_epoch.items())
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]


def test_every_option_is_a_param_and_a_changed_one_a_tag(tracked):
    run, _, mlrun = tracked
    params, tags = mlrun.data.params, mlrun.data.tags
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert set(params) >= set(config) - {"augment"}
    assert params["method"] == "simclr" and params["batch_size"] == "12" and params["crop_scale"] == "[0.08, 1.0]"
    assert "mlflow" in json.loads(params["tracking"])[0] and params["tracking_experiment"] == "scenario"
    assert params["epochs"] == "1" and tags["changed.epochs"] == "2" and tags["changed.resume"] == "true"
    assert tags["contrastkit.out"] == str(run)


def test_artifacts_and_the_evaluation(tracked, tmp_path):
    run, client, mlrun = tracked
    rid = mlrun.info.run_id
    top = {a.path for a in client.list_artifacts(rid)}
    assert {"config.yaml", "summary.json", "plots", "eval"} <= top
    assert {a.path for a in client.list_artifacts(rid, "plots")} == {"plots/loss_curve.png", "plots/knn_per_epoch.png"}
    local = client.download_artifacts(rid, "summary.json", str(tmp_path))
    assert json.loads(open(local).read())["global_step"] == 6
    assert [a.path for a in client.list_artifacts(rid, "eval")] == ["eval/eval_knn.json"]
    evaluated = json.loads((run / "eval_knn.json").read_text())["metrics"]
    (top1,) = client.get_metric_history(rid, "eval/knn/top1")
    assert top1.step == 6 and top1.value == pytest.approx(evaluated["top1"])
