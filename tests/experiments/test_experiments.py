"""Experiments: grids (planned, not run), summaries on synthetic results, and smoke runs end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from contrastkit.experiments import (AUGMENT_OPS, BUDGETS, EXPERIMENTS, get_experiment, materialise_subset,
                                     ops_augment, plan, run_experiment)
from contrastkit.experiments import execute, records
from contrastkit.experiments.augment_overrides import check_augment_overrides
from contrastkit.experiments.subsets import subset_folder

NAMES = list(EXPERIMENTS)


@pytest.fixture(scope="module")
def subset_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("subsets")


@pytest.fixture(autouse=True)
def _isolated_subsets(monkeypatch, subset_root):
    monkeypatch.setenv("CONTRASTKIT_SUBSET_ROOT", str(subset_root))


# ---------------------------------------------------------------------------------------------- plans


@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("name", NAMES)
def test_plan_is_valid_and_writes_nothing(name, budget, tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASTKIT_SUBSET_ROOT", str(tmp_path / "subsets"))
    runs = plan(name, budget, out=tmp_path / "out")
    assert runs, "every experiment has runs"
    assert len({r.key for r in runs}) == len(runs)
    base = BUDGETS[budget].config_fields(name)
    for r in runs:
        assert r.out == tmp_path / "out" / "runs" / r.key
        assert r.config.encoder == "resnet18" and r.config.width == base["width"]
        assert r.config.epochs == base["epochs"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "subsets").exists()


def test_augmentation_grid_is_singles_and_pairs():
    runs = plan("augmentations", "cpu")
    assert len(runs) == len(AUGMENT_OPS) + len(AUGMENT_OPS) * (len(AUGMENT_OPS) - 1) // 2
    by = {r.key: r.spec.augment for r in runs}
    assert by["aug-crop+color"] == ops_augment(("crop", "color"))
    assert by["aug-crop+color"]["color"] and by["aug-crop+color"]["grayscale"] and by["aug-crop+color"]["crop"]
    assert not by["aug-crop+color"]["blur"] and by["aug-crop+color"]["rotate"] == 0.0
    assert by["aug-rotate"] == {"crop": False, "flip": False, "color": False, "grayscale": False, "blur": False,
                                "rotate": 0.5, "cutout": 0.0, "solarize": 0.0}
    with pytest.raises(ValueError, match="unknown augmentation op"):
        ops_augment(("crop", "sobel"))


def test_grids_of_the_other_experiments():
    cfgs = {n: [r.config for r in plan(n, "cpu")] for n in NAMES}
    assert [(c.method, c.color_strength, c.blur) for c in cfgs["color-strength"]][:5] == [
        ("simclr", 0.125, "off"), ("simclr", 0.25, "off"), ("simclr", 0.5, "off"), ("simclr", 1.0, "off"),
        ("simclr", 1.0, "on")]
    assert {c.method for c in cfgs["color-strength"]} == {"simclr", "ce"}
    losses = {(c.loss, c.semi_hard) for c in cfgs["losses"]}
    assert {("ntxent", False), ("ntlogistic", False), ("margin", False), ("margin", True)} <= losses
    assert sorted({c.margin for c in cfgs["losses"] if c.loss == "margin"}) == [0.1, 0.5]
    assert [c.head for c in cfgs["projection-head"]] == ["none", "linear", "mlp"]
    assert [r.spec.evaluate_z for r in plan("projection-head", "cpu")] == [False, True, True]
    assert [(c.temperature, c.l2_normalize) for c in cfgs["temperature"]] == [
        (0.05, True), (0.1, True), (0.2, True), (0.5, True), (1.0, True), (1.0, False), (10.0, False), (100.0, False)]
    batch = cfgs["batch-size"]
    assert [c.batch_size for c in batch] == [64, 128, 256, 512] and {c.epochs for c in batch} == {4}
    assert all(c.lr_scaling == "sqrt" for c in batch)
    assert [(c.method, c.supcon_variant) for c in cfgs["supcon-variants"]] == [("supcon", "out"), ("supcon", "in")]
    assert [c.method for c in cfgs["supcon-vs-ce"]] == ["supcon", "ce", "simclr"]


def test_cpu_budget_uses_a_cifar10_subset(tmp_path):
    cfg = plan("supcon-vs-ce", "cpu")[0].config
    assert cfg.data == subset_folder("cifar10", 1000, 500)  # torchvision's, downloaded once
    assert cfg.preset == "cifar" and cfg.size == 32 and cfg.width == 0.25 and cfg.cifar_stem == "on"
    assert plan("supcon-vs-ce", "gpu")[0].config.width == 1.0


def test_unknown_names_are_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match="known experiments: augmentations"):
        plan("lossses", "smoke")
    with pytest.raises(ValueError, match="known budgets: smoke, cpu, gpu"):
        plan("losses", "tpu")


def test_list(capsys):
    assert run_experiment("list") == {"experiments": NAMES}
    out = capsys.readouterr().out
    assert all(n in out for n in NAMES)


# ---------------------------------------------------------------------------------------------- pieces


def test_augment_overrides_are_applied_and_then_removed():
    """The overrides ride on a copy of the config (dataclasses.replace); the original config is left as it was."""
    import dataclasses

    from contrastkit.config import PretrainConfig
    from contrastkit.data import load_dataset
    from contrastkit.train.data import resolve_preset

    cfg = PretrainConfig(data="digits", preset="cifar")
    splits = load_dataset("digits")
    spec = resolve_preset(dataclasses.replace(cfg, augment={"rotate": 0.5, "color": False}), splits)
    assert spec.overrides["rotate"] == 0.5 and spec.overrides["color"] is False
    assert cfg.augment == {}
    assert "rotate" not in resolve_preset(cfg, splits).overrides
    with pytest.raises(TypeError, match="unknown augmentation argument"):
        check_augment_overrides({"sobel": True})
    with pytest.raises(ValueError, match="probability"):
        check_augment_overrides({"rotate": 2.0})


def test_subset_of_an_image_folder(tmp_path):
    from conftest import make_image_folder

    data = make_image_folder(tmp_path / "data", per_class=6)
    folder = Path(materialise_subset(str(data), 2, 1, seed=0, root=str(tmp_path / "subsets")))
    assert sorted(p.name for p in (folder / "train").iterdir()) == ["class_0", "class_1", "class_2"]
    files = sorted((folder / "train").rglob("*.png"))
    assert len(files) == 6 and all(f.is_symlink() for f in files)
    assert len(list((folder / "test").rglob("*.png"))) == 3
    assert json.loads((folder / "subset.json").read_text())["counts"] == {"train": 6, "test": 3}
    assert materialise_subset(str(data), 2, 1, seed=0, root=str(tmp_path / "subsets")) == str(folder)  # reused
    assert materialise_subset(str(data), None, None) == str(data)
    with pytest.raises(ValueError, match="positive integer"):
        materialise_subset(str(data), 0, 1)


def _record(key, labels, linear, knn=None, **extra):
    return {"key": key, "labels": labels, "metrics": {"linear_h": linear, "knn_h": knn or linear - 5, **extra}}


def test_summaries_judge_the_ordering():
    losses = get_experiment("losses")
    recs = [_record("a", {"variant": "ntxent", "param": "tau=0.5"}, 60.0),
            _record("b", {"variant": "ntlogistic", "param": "tau=0.5"}, 50.0),
            _record("c", {"variant": "margin", "param": "m=0.1"}, 48.0),
            _record("d", {"variant": "margin", "param": "m=0.5"}, 52.0),
            _record("e", {"variant": "margin+sh", "param": "m=0.5"}, 55.0)]
    s = losses.summarise(recs, losses.paper)
    assert s.verdict.startswith("Agrees")
    margin_row = next(r for r in s.rows if r["loss"] == "margin")
    assert margin_row["best setting"] == "m=0.5" and margin_row["linear top-1 (%)"] == 52.0
    assert next(r for r in s.rows if r["loss"] == "ntlogistic+sh")["best setting"] == "not run"
    assert s.figure["panels"][1]["series"]["linear top-1"][0] == 63.9

    sce = get_experiment("supcon-vs-ce")
    recs = [_record("supcon", {"method": "supcon"}, 70.0), _record("ce", {"method": "ce"}, 75.0),
            _record("simclr", {"method": "simclr"}, 60.0)]
    assert sce.summarise(recs, sce.paper).verdict.startswith("Partly agrees")
    assert sce.summarise(recs[:1], sce.paper).verdict.startswith("Not enough")

    temp = get_experiment("temperature")
    recs = [_record(f"tau{t:g}", {"tau": t}, acc) for t, acc in ((0.05, 40.0), (0.2, 45.0), (1.0, 41.0))]
    s = temp.summarise(recs, temp.paper)
    assert s.verdict.startswith("Agrees") and "half has no finished runs" in s.verdict
    recs += [_record("nol2-tau10", {"tau": 10.0, "l2": False}, 38.0)]
    s = temp.summarise(recs, temp.paper)
    assert "l2 normalisation: agrees" in s.verdict and "gap of +7.0 points" in s.verdict
    assert [(r["l2 norm"], r["tau"]) for r in s.rows][-2:] == [("no", 10.0), ("no", 100.0)]
    assert s.rows[-2]["paper (%)"] == 57.2 and s.rows[-2]["linear top-1 (%)"] == 38.0
    assert s.figure["labels"][-2:] == ["10, no l2", "100, no l2"]
    recs[-1] = _record("nol2-tau10", {"tau": 10.0, "l2": False}, 46.0)
    assert "l2 normalisation: does not agree" in temp.summarise(recs, temp.paper).verdict

    aug = get_experiment("augmentations")
    recs = [_record("aug-" + "+".join(ops), {"ops": "+".join(ops)}, 40.0 + 5 * len(ops))
            for ops in [(o,) for o in AUGMENT_OPS] + [("crop", "blur")]]
    recs.append(_record("aug-crop+color", {"ops": "crop+color"}, 70.0))
    s = aug.summarise(recs, None)
    assert s.verdict.startswith("Agrees")
    assert s.figure["matrix"][0][1] == s.figure["matrix"][1][0] == 70.0 and s.figure["matrix"][3][4] is None


def test_queue_summary_judges_knn_at_equal_time():
    queue = get_experiment("queue")

    def arm(name, knn, ips, steps):
        return {"key": name, "labels": {"arm": name}, "metrics": {"linear_h": knn + 3, "knn_h": knn},
                "train": {"images_per_s": ips, "global_step": steps, "train_time_s": 300.0},
                "load_avg": {"start": [6.0, 5.0, 4.0], "end": [8.5, 6.0, 5.0]}}

    pays = queue.summarise([arm("no queue", 40.0, 200.0, 900), arm("queue 4096", 42.5, 150.0, 700)], None)
    assert pays.verdict.startswith("The queue pays on this machine") and "+2.5 points" in pays.verdict
    assert "150 images/s against 200" in pays.verdict and "(0.75x)" in pays.verdict
    assert "6.0 -> 8.5" in pays.verdict and pays.rows[1]["load avg (start -> end)"] == "6.0 -> 8.5"
    assert queue.summarise([arm("no queue", 40.0, 200.0, 900), arm("queue 4096", 38.0, 150.0, 700)],
                           None).verdict.startswith("The queue does not pay")
    assert queue.summarise([arm("no queue", 40.0, 200.0, 900), arm("queue 4096", 40.6, 150.0, 700)],
                           None).verdict.startswith("No difference within noise")
    assert queue.summarise([arm("no queue", 40.0, 200.0, 900)], None).verdict.startswith("Not enough")
    assert pays.figure["panels"][1]["series"]["images/s"] == [200.0, 150.0]


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", ["supcon-variants", "projection-head", "queue"])
def test_smoke_run_end_to_end_then_resume(name, tmp_path, monkeypatch):
    out = tmp_path / name
    results = run_experiment(name, budget="smoke", out=out, device="cpu", progress=False)
    for f in ("results.json", "results.md", f"{name}.png"):
        assert (out / f).is_file(), f
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((out / "results.json").read_text())
    assert stored["status"] == "done" and stored["budget"] == "smoke" and stored["data"] == "digits"
    assert len(stored["runs"]) == len(plan(name, "smoke")) and stored["resumed_runs"] == []
    for r in stored["runs"]:
        assert r["status"] == "ok" and 0 <= r["metrics"]["linear_h"] <= 100 and r["train"]["global_step"] == 2
    if name == "projection-head":
        assert "linear_z" in next(r for r in stored["runs"] if r["key"] == "head-mlp")["metrics"]
        assert "linear_z" not in next(r for r in stored["runs"] if r["key"] == "head-none")["metrics"]
    assert stored["baseline"]["key"] == "random-init"
    md = (out / "results.md").read_text()
    assert "**Verdict.**" in md and f"![{name}]({name}.png)" in md and "contrastkit experiment" in md

    # Resume: nothing is trained again; a run whose evaluation is missing is only evaluated.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(execute, "pretrain_with_augment", no_training)
    first = results["runs"][0]["key"]
    (out / "runs" / first / "result.json").unlink()
    again = run_experiment(name, budget="smoke", out=out, device="cpu", progress=False)
    assert sorted(again["resumed_runs"]) == sorted(r["key"] for r in results["runs"] if r["key"] != first)
    assert again["runs"][0]["metrics"] == results["runs"][0]["metrics"]
    assert again["rows"] == results["rows"]


def test_changed_plan_is_not_taken_for_finished(tmp_path, monkeypatch):
    out = tmp_path / "sv"
    run_experiment("supcon-variants", budget="smoke", out=out, device="cpu", progress=False)
    calls = []

    def fake_pretrain(cfg, augment=None):
        calls.append(cfg.seed)
        raise RuntimeError("stop here")

    monkeypatch.setattr(execute, "pretrain_with_augment", fake_pretrain)
    with pytest.raises(RuntimeError, match="stop here"):
        run_experiment("supcon-variants", budget="smoke", out=out, device="cpu", seed=1, progress=False)
    assert calls == [1]


def test_cli_experiment_list_and_bad_name(capsys):
    from contrastkit.cli import main

    assert main(["experiment", "list"]) == 0
    assert "supcon-vs-ce" in capsys.readouterr().out
    assert main(["experiment", "nope"]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err


def test_fingerprint_tolerates_new_config_fields_at_their_default():
    run = plan("supcon-variants", "smoke")[0]
    fp = run.fingerprint()
    older = json.loads(json.dumps(fp))
    del older["config"]["margin"]  # as if stored before the field existed; the run uses the default
    assert records.same_fingerprint(older, fp)
    changed = json.loads(json.dumps(fp))
    changed["config"]["temperature"] = 0.7
    assert not records.same_fingerprint(changed, fp)
    assert not records.same_fingerprint({**fp, "linear_epochs": 1}, fp)
    assert not records.same_fingerprint(None, fp)


def test_fingerprint_holds_the_method_default_temperature():
    """A run whose temperature is left to its method records the resolved value, so a result stored when the
    default was written out (0.1 for SupCon) still counts as finished, and one at another temperature does not."""
    import dataclasses

    run = plan("supcon-variants", "smoke")[0]
    run = dataclasses.replace(run, config=dataclasses.replace(run.config, temperature=None))
    fp = run.fingerprint()
    assert fp["config"]["temperature"] == 0.1
    stored = json.loads(json.dumps(fp))
    assert records.same_fingerprint(stored, fp)
    stored["config"]["temperature"] = 0.5
    assert not records.same_fingerprint(stored, fp)
