"""Running an experiment: plan the runs, pretrain and evaluate each one, resume, report.

Layout of the output folder::

    OUT/results.json            everything: runs, metrics, table rows, verdict, command, wall times
    OUT/results.md              the table, the verdict and the figure
    OUT/<name>.png              the figure (bars beside the paper's numbers, or a heatmap)
    OUT/runs/<key>/             one pretraining run: config.yaml, last.pt, metrics.jsonl, summary.json,
                                load_avg.json (the machine's 1/5/15-minute load at the training's start and end),
                                and result.json once it is evaluated
    OUT/runs/random-init/       the same encoder, untrained: the floor every run should clear

Resume is at the run level: a run whose ``result.json`` was written by the
same plan (same config, augmentation and evaluation) is not run again; a run
whose training finished but whose evaluation did not is only evaluated. A run
that stops on a non-finite loss is recorded as failed (and reported as such)
and the experiment goes on with the others.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from tqdm.auto import tqdm

from ..config import PretrainConfig
from ..evaluate.protocols import evaluation_data, run_protocol
from ..methods import check_options
from ..models import CheckpointMeta, build_model, load_checkpoint_model
from ..runtime import resolve_device
from ..runtime.ownership import hold_folder, remove_owned
from ..train import NonFiniteError
from .augment_overrides import check_augment_overrides, pretrain_with_augment
from .budgets import BUDGETS, Budget, get_budget
from .catalogue import EXPERIMENTS, get_experiment
from .records import config_fingerprint, read_json, same_fingerprint, write_json
from .report import write_figure, write_markdown
from .spec import RunSpec
from .subsets import materialise_subset, subset_folder

__all__ = ["PlannedRun", "plan", "run_experiment", "describe_experiments", "RESULT_FILE"]

RESULT_FILE = "result.json"
RESULTS = "results.json"
SMOKE_NOTE = ("(Smoke budget: two training steps on a few hundred digits; these runs check that the command "
              "works and say nothing about the claim.) ")
BASELINE_KEY = "random-init"


@dataclass(frozen=True)
class PlannedRun:
    """A run of an experiment, resolved against a budget.

    Attributes:
        spec: what the experiment varies in this run.
        config: the complete pretraining config (``out`` is the run's folder).
        linear_epochs: epochs of the linear protocol.
    """

    spec: RunSpec
    config: PretrainConfig
    linear_epochs: int

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a stored result to count as this run's: the options as the run resolves them (a
        temperature left unset is its method's), so a record from before a default became method-dependent matches."""
        return {"config": config_fingerprint(self.config), "augment": dict(sorted(self.spec.augment.items())),
                "evaluate_z": self.spec.evaluate_z, "linear_epochs": self.linear_epochs}


def _default_out(name: str) -> Path:
    return Path("runs") / "experiments" / name


def plan(name: str, budget: str | Budget = "smoke", *, data: str | None = None, out: str | os.PathLike | None = None,
         device: str = "auto", seed: int = 0) -> list[PlannedRun]:
    """The runs of an experiment under a budget, without running (or writing) anything.

    Args:
        name: an experiment name (see :func:`describe_experiments`).
        budget: ``smoke``, ``cpu``, ``gpu`` or a :class:`Budget`.
        data: data set or folder (None: the budget's default). With a budget that
            subsets the data, the runs' ``data`` is the subset folder.
        out: the experiment's output folder (default ``runs/experiments/NAME``).
        device: ``cpu``, ``cuda`` or ``auto``.
        seed: seed of every run (and of the subset).

    Returns:
        One :class:`PlannedRun` per run, in order.

    Raises:
        ValueError: unknown experiment or budget, or a config field the library rejects.
        TypeError: an augmentation override the library rejects.
    """
    experiment = get_experiment(name)
    b = get_budget(budget)
    out_dir = Path(out) if out is not None else _default_out(name)
    source = data or b.default_data
    run_data = subset_folder(source, b.train_per_class, b.test_per_class, seed)
    planned = []
    for spec in experiment.runs(b):
        if spec.key == BASELINE_KEY or "/" in spec.key or spec.key.startswith("."):
            raise ValueError(f"run key {spec.key!r} of experiment {name} is not a valid folder name")
        fields = b.config_fields(name)
        fields.update(spec.config)
        fields.update(data=run_data, seed=seed, device=device, out=str(out_dir / "runs" / spec.key))
        if not b.runs_progress:
            fields["progress"] = False
        cfg = PretrainConfig.from_dict(fields)
        check_options(cfg)
        check_augment_overrides(spec.augment)
        planned.append(PlannedRun(spec, cfg, b.linear_epochs))
    keys = [p.key for p in planned]
    if len(set(keys)) != len(keys):
        raise ValueError(f"experiment {name} has duplicate run keys: {sorted(k for k in keys if keys.count(k) > 1)}")
    return planned


def describe_experiments() -> str:
    """A text listing of the experiments: name, source, number of runs per budget, claim."""
    lines = []
    for name, exp in EXPERIMENTS.items():
        counts = ", ".join(f"{b}: {len(exp.runs(BUDGETS[b]))}" for b in BUDGETS)
        lines.append(f"{name:<16} {exp.source:<24} runs ({counts})\n{'':<16} {exp.claim}")
    return "\n".join(lines)


class _Evaluator:
    """Linear and kNN evaluation of frozen features; the evaluation data are decoded once and shared."""

    def __init__(self, device: str, linear_epochs: int, seed: int) -> None:
        self.device = resolve_device(device)
        self.linear_epochs = linear_epochs
        self.seed = seed
        self._data: dict[tuple, dict] = {}

    def data(self, data: str, image_size: int, mean, std) -> dict[str, Any]:
        """The evaluation data of ``data`` at an input size and normalisation, decoded once."""
        key = (data, int(image_size), tuple(mean), tuple(std))
        if key not in self._data:
            self._data[key] = evaluation_data(data, image_size, mean, std, seed=self.seed, num_workers=0)
        return self._data[key]

    def data_of(self, meta: CheckpointMeta) -> dict[str, Any]:
        """The evaluation data of a checkpoint: its data at its input size and normalisation."""
        return self.data(meta.data, meta.image_size, meta.mean, meta.std)

    def evaluate(self, model, data: dict[str, Any], projections: tuple[bool, ...]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for projection in projections:
            what = "z" if projection else "h"
            feats: dict = {}
            knn = run_protocol("knn", model, data, projection=projection, device=self.device, seed=self.seed,
                               feats=feats)
            lin = run_protocol("linear", model, data, projection=projection, device=self.device, seed=self.seed,
                               feats=feats, epochs=self.linear_epochs)
            metrics[f"knn_{what}"] = round(100.0 * float(knn["metrics"]["top1"]), 2)
            metrics[f"linear_{what}"] = round(100.0 * float(lin["metrics"]["top1"]), 2)
        return metrics


def _train_summary_fields(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("global_step", "epochs", "stop_reason", "train_time_s", "images_per_s", "images_per_s_steady",
            "final_loss")
    return {k: summary.get(k) for k in keep}


def _run_one(run: PlannedRun, evaluator: _Evaluator) -> dict[str, Any]:
    """Pretrain (unless finished before) and evaluate one run; returns its record (also written to disk)."""
    result_path = run.out / RESULT_FILE
    fingerprint = run.fingerprint()
    stored = read_json(result_path)
    if stored is not None and same_fingerprint(stored.get("fingerprint"), fingerprint):
        stored["resumed"] = True
        return stored

    t0 = time.perf_counter()
    record: dict[str, Any] = {"key": run.key, "labels": run.spec.labels, "augment": run.spec.augment,
                              "fingerprint": fingerprint, "status": "ok", "resumed": False}
    summary = read_json(run.out / "summary.json")
    trained = (summary is not None and (run.out / "last.pt").is_file()
               and same_fingerprint(read_json(run.out / "fingerprint.json"), fingerprint)
               and summary.get("stop_reason") in ("completed", "max_steps", "time_budget"))
    if not trained:
        record["load_avg"] = {"start": list(os.getloadavg())}  # the machine's load (as uptime shows it)
        try:
            run.out.mkdir(parents=True, exist_ok=True)
            remove_owned(run.out, ["fingerprint.json"])
            # not trained to the end with this fingerprint: the folder's run (if any) is replaced
            summary = pretrain_with_augment(dataclasses.replace(run.config, overwrite=True), run.spec.augment)
        except NonFiniteError as exc:
            record.update(status="failed", error=str(exc), metrics={}, wall_time_s=round(time.perf_counter() - t0, 1))
            write_json(record, result_path)
            return record
        write_json(fingerprint, run.out / "fingerprint.json")
        record["load_avg"]["end"] = list(os.getloadavg())
        write_json(record["load_avg"], run.out / "load_avg.json")
    else:  # trained before: the load of that training
        record["load_avg"] = read_json(run.out / "load_avg.json")
    record["train"] = _train_summary_fields(summary)
    t_eval = time.perf_counter()
    model, meta, _ = load_checkpoint_model(run.out / "last.pt", evaluator.device)
    data = evaluator.data_of(meta)
    has_z = not isinstance(model.head, torch.nn.Linear)  # the CE baseline's head is a classifier, not g
    projections = (False, True) if run.spec.evaluate_z and has_z else (False,)
    record["metrics"] = evaluator.evaluate(model, data, projections)
    record["meta"] = {"image_size": meta.image_size, "mean": list(meta.mean), "std": list(meta.std),
                      "n_train": len(data["train_labels"]), "n_test": len(data["test_labels"])}
    record["eval_time_s"] = round(time.perf_counter() - t_eval, 1)
    record["wall_time_s"] = round(time.perf_counter() - t0, 1)
    write_json(record, result_path)
    return record


def _random_baseline(runs: list[PlannedRun], records: list[dict[str, Any]], evaluator: _Evaluator,
                     out: Path) -> dict[str, Any] | None:
    """kNN and linear accuracy of the budget's encoder at initialisation (the floor)."""
    first = next((r for r in records if r.get("meta")), None)
    if first is None:
        return None
    cfg = dataclasses.replace(runs[0].config, method="simclr", head="mlp")
    fingerprint = {"encoder": cfg.encoder, "width": cfg.width, "cifar_stem": cfg.cifar_stem, "seed": cfg.seed,
                   "data": cfg.data, "linear_epochs": evaluator.linear_epochs, "meta": first["meta"]}
    path = out / "runs" / BASELINE_KEY / RESULT_FILE
    stored = read_json(path)
    if stored is not None and same_fingerprint(stored.get("fingerprint"), fingerprint):
        return stored
    t0 = time.perf_counter()
    meta = first["meta"]
    data = evaluator.data(cfg.data, meta["image_size"], meta["mean"], meta["std"])
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, None, meta["image_size"]).to(evaluator.device).eval()
    record = {"key": BASELINE_KEY, "labels": {"encoder": "random init"}, "fingerprint": fingerprint,
              "metrics": evaluator.evaluate(model, data, (False,)), "wall_time_s": round(time.perf_counter() - t0, 1)}
    write_json(record, path)
    return record


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the block and restore it afterwards."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _command(name: str, data: str, budget: Budget, out: Path, device: str, seed: int) -> str:
    parts = ["contrastkit", "experiment", name, "--data", data, "--budget", budget.name, "--out", str(out)]
    if device != "auto":
        parts += ["--device", device]
    if seed:
        parts += ["--seed", str(seed)]
    return " ".join(shlex.quote(p) for p in parts)


def _add_stages(results: dict[str, Any], stages: list[dict[str, Any]] | None, metric_note: str | None) -> None:
    """Record an experiment's stages (fine-tuning, distillation) beside its runs, in place."""
    if stages is not None:
        results["stages"] = stages
        results["resumed_runs"] += [r["key"] for r in stages if r.get("resumed")]
        results["runs_wall_time_s"] = round(results["runs_wall_time_s"]
                                            + sum(r.get("wall_time_s", 0.0) for r in stages), 1)
    if metric_note:
        results["metric_note"] = metric_note


def run_experiment(name: str, *, data: str | None = None, budget: str | Budget = "smoke",
                   out: str | os.PathLike | None = None, device: str = "auto", seed: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """Run (or resume) an experiment and write ``results.json``, ``results.md`` and a PNG figure under ``out``.

    Args:
        name: an experiment name, or ``"list"`` to print the known experiments.
        data: data set or folder (None: the budget's default: ``digits`` for
            ``smoke``, ``cifar10`` (torchvision's) for ``cpu`` and ``gpu``).
        budget: ``smoke``, ``cpu``, ``gpu`` or a :class:`Budget`.
        out: output folder (default ``runs/experiments/NAME``).
        device: ``cpu``, ``cuda`` or ``auto``.
        seed: seed of every run and of the data subset.
        progress: show a progress bar over the runs.

    Returns:
        The content of ``results.json`` (``{"experiments": [...]}`` for ``"list"``).

    Raises:
        ValueError: unknown experiment or budget, bad data, or a config the library rejects
            (all before any training).
    """
    if name == "list":
        print(describe_experiments())
        return {"experiments": list(EXPERIMENTS)}
    t_start = time.perf_counter()
    experiment = get_experiment(name)
    b = get_budget(budget)
    out_dir = Path(out) if out is not None else _default_out(name)
    source = data or b.default_data
    runs = plan(name, b, data=source, out=out_dir, device=device, seed=seed)  # validates everything first
    run_data = materialise_subset(source, b.train_per_class, b.test_per_class, seed)
    entries = [RESULTS, RESULTS + ".tmp", "results.md", f"{name}.png", "runs", "stages"]
    with hold_folder(out_dir, "experiment", "experiment", entries):  # one writer; someone else's folder refused
        evaluator = _Evaluator(device, b.linear_epochs, seed)
        command = _command(name, source, b, out_dir, device, seed)
        header = {"experiment": name, "claim": experiment.claim, "source": experiment.source, "budget": b.name,
                  "data": source, "run_data": run_data, "seed": seed, "command": command, "paper": experiment.paper,
                  "torch_threads": b.threads or torch.get_num_threads()}

        records: list[dict[str, Any]] = []
        with _torch_threads(b.threads):
            bar = tqdm(runs, desc=f"{name} ({b.name})", unit="run", disable=not progress, dynamic_ncols=True)
            for run in bar:
                bar.set_postfix_str(run.key)
                records.append(_run_one(run, evaluator))
                write_json({**header, "status": "running", "runs": records}, out_dir / "results.json")
            bar.close()
            baseline = _random_baseline(runs, records, evaluator, out_dir)
            stages = None
            if experiment.stages is not None:  # fine-tuning and distillation on the finished runs (few-labels)
                stages = experiment.stages(experiment, b, runs, evaluator, out_dir, progress)

        judged = stages if stages is not None else [r for r in records if r.get("status") == "ok"]
        summary = experiment.summarise([r for r in judged if r.get("status") == "ok"], experiment.paper)
        figure_path = write_figure(summary.figure, out_dir / f"{name}.png", baseline=baseline,
                                   title=f"{name}: {experiment.source} ({b.name} budget)")
        results = {
            **header,
            "status": "done",
            "runs": records,
            "baseline": baseline,
            "rows": summary.rows,
            "verdict": (SMOKE_NOTE + summary.verdict) if b.name == "smoke" else summary.verdict,
            "failed_runs": [r["key"] for r in records if r.get("status") == "failed"],
            "runs_wall_time_s": round(sum(r.get("wall_time_s", 0.0) for r in records)
                                      + (baseline or {}).get("wall_time_s", 0.0), 1),
            "invocation_wall_time_s": round(time.perf_counter() - t_start, 1),
            "resumed_runs": [r["key"] for r in records if r.get("resumed")],
            "figure": figure_path.name,
        }
        _add_stages(results, stages, experiment.metric_note)
        write_json(results, out_dir / "results.json")
        md = write_markdown(results, out_dir / "results.md")
        if progress:
            print(md)
        return results
