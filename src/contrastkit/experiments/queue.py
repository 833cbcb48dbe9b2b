"""queue: does a momentum encoder with a memory queue pay on this machine?

SimCLR at a small batch (64 images, 128 views) sees 126 negatives per anchor. ``simclr-queue`` contrasts each query
with the batch's keys and the 4,096 keys of the last 32 steps, from a momentum copy of f and g (MoCo, He et al.
2020), at the cost of one more forward pass without gradient per step. Both arms use tau = 0.2. Both arms get the same CPU time (``--time-budget-s``, with the learning-rate schedule
spanning that time), so the question is the one a user with a CPU asks: at equal cost, which encoder is better?
The answer is kNN (and linear) top-1 on frozen h; images/s says what the queue costs.

The verdict calls a difference of less than one point of kNN top-1 a tie (one seed per arm). The runs record the
load average of the machine at their start and end, since a shared machine slows both arms alike only when the
load stays the same.
"""
from __future__ import annotations

from typing import Any

from .budgets import Budget
from .spec import RunSpec, Summary

__all__ = ["QUEUE_SIZE", "queue_runs", "queue_summary"]

QUEUE_SIZE = 4096
TAU = 0.2  # both arms: MoCo v2's, and the best of the cifar-budget sweep at batch 64 (benchmarks/README.md)
ARMS = ("no queue", f"queue {QUEUE_SIZE}")
TIE = 1.0  # kNN points: within this, one seed cannot tell the arms apart


def queue_runs(budget: Budget) -> list[RunSpec]:
    """SimCLR with and without the queue; the batch and the time budget are the budget's (``per_experiment``)."""
    return [RunSpec(key="simclr", labels={"arm": ARMS[0]}, config={"method": "simclr", "temperature": TAU}),
            RunSpec(key=f"simclr-queue{QUEUE_SIZE}", labels={"arm": ARMS[1]},
                    config={"method": "simclr-queue", "queue_size": QUEUE_SIZE, "temperature": TAU})]


def _metric(record: dict[str, Any] | None, name: str) -> float | None:
    return None if record is None else record.get("metrics", {}).get(name)


def _load(record: dict[str, Any] | None) -> str:
    """The 1-minute load average at the run's start and end, as ``uptime`` shows it."""
    load = (record or {}).get("load_avg") or {}
    return f"{load['start'][0]:.1f} -> {load['end'][0]:.1f}" if "start" in load and "end" in load else "-"


def _verdict(by: dict[str, dict[str, Any]]) -> str:
    plain, queue = by.get(ARMS[0]), by.get(ARMS[1])
    knn = [_metric(plain, "knn_h"), _metric(queue, "knn_h")]
    speed = [(r or {}).get("train", {}).get("images_per_s") for r in (plain, queue)]
    if None in knn:
        return "Not enough finished runs to judge."
    gain = knn[1] - knn[0]
    word = ("The queue pays on this machine" if gain >= TIE else "The queue does not pay on this machine"
            if gain <= -TIE else "No difference within noise")
    cost = (f" It trains at {speed[1]:.0f} images/s against {speed[0]:.0f} without it ({speed[1] / speed[0]:.2f}x)."
            if None not in speed and speed[0] else "")
    steps = [(r or {}).get("train", {}).get("global_step") for r in (plain, queue)]
    return (f"{word}: at the same CPU time, kNN top-1 {knn[1]:.1f}% with the {QUEUE_SIZE}-key queue against "
            f"{knn[0]:.1f}% without ({gain:+.1f} points; linear {_metric(queue, 'linear_h')}% against "
            f"{_metric(plain, 'linear_h')}%), in {steps[1]} against {steps[0]} steps.{cost} A difference under "
            f"{TIE:.0f} point is within the noise of one seed; the machine's load (1-minute average at each run's "
            f"start -> end: {_load(plain)} without, {_load(queue)} with the queue) changes both speed and steps.")


def queue_summary(results: list[dict[str, Any]], paper: dict[str, Any] | None) -> Summary:
    by = {r["labels"]["arm"]: r for r in results}
    rows = []
    for arm in ARMS:
        r = by.get(arm)
        train = (r or {}).get("train", {})
        rows.append({"arm": arm, "kNN top-1 (%)": _metric(r, "knn_h"), "linear top-1 (%)": _metric(r, "linear_h"),
                     "images/s": train.get("images_per_s"), "steps": train.get("global_step"),
                     "train s": train.get("train_time_s"), "load avg (start -> end)": _load(r)})
    figure = {"kind": "bars", "labels": list(ARMS), "xlabel": "SimCLR, batch 64, the same CPU time",
              "panels": [{"title": "accuracy on frozen h",
                          "series": {"kNN top-1": [_metric(by.get(a), "knn_h") for a in ARMS],
                                     "linear top-1": [_metric(by.get(a), "linear_h") for a in ARMS]}},
                         {"title": "training throughput", "ylabel": "images/s", "percent": False,
                          "series": {"images/s": [(by.get(a) or {}).get("train", {}).get("images_per_s")
                                                  for a in ARMS]}}]}
    return Summary(rows, _verdict(by), figure)
