"""An experiment's report: the markdown table and the PNG figure.

Figures are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas (no
pyplot state, no display). Bars put our numbers and the paper's side by side,
in two panels, because the settings differ (our small CPU runs on CIFAR-10
against ResNet-50 on ImageNet): compare orderings, not heights. A dashed line
marks the same encoder at random initialisation.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..evaluate.plots import new_figure

__all__ = ["write_markdown", "write_figure", "markdown_table"]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of dict rows (columns: the union of keys, first-seen order; missing cells ``-``)."""
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(results: dict[str, Any], path: str | Path) -> str:
    """Write ``results.md`` (title, claim, command, table, verdict, figure, per-run details); returns the text."""
    paper = results.get("paper") or {}
    lines = [
        f"# {results['experiment']}: {results['source']}",
        "",
        f"**Claim.** {results['claim']}",
        "",
        f"**Command.** `{results['command']}`  ",
        f"**Budget.** {results['budget']}; data {results['data']}"
        + (f" (subset: {results['run_data']})" if results["run_data"] != results["data"] else "") + "  ",
        f"**Wall time.** {results['runs_wall_time_s']:.0f} s over all runs "
        f"({results['invocation_wall_time_s']:.0f} s in the last invocation; resumed runs: "
        f"{len(results['resumed_runs'])})",
        "",
        (results.get("metric_note") or "Accuracies are top-1 in percent on the test split, from a linear "
         "classifier (and a kNN classifier, k = 200) on the frozen encoder output h")
        + (f"; paper numbers: {paper['source']}" if paper else "") + ".",
        "",
        markdown_table(results["rows"]),
        "",
    ]
    base = results.get("baseline")
    if base:
        m = base["metrics"]
        lines += [f"Same encoder at random initialisation (the floor): linear {m['linear_h']:.1f}%, "
                  f"kNN {m['knn_h']:.1f}%.", ""]
    if results.get("failed_runs"):
        lines += [f"**Failed runs** (non-finite loss): {', '.join(results['failed_runs'])}.", ""]
    lines += [f"**Verdict.** {results['verdict']}", "", f"![{results['experiment']}]({results['figure']})", "",
              "## Runs", ""]
    run_rows = []
    for r in results["runs"]:
        train = r.get("train", {})
        run_rows.append({"run": r["key"], **{k: v for k, v in r.get("metrics", {}).items()},
                         "steps": train.get("global_step"), "final loss": train.get("final_loss"),
                         "train s": train.get("train_time_s"), "wall s": r.get("wall_time_s"),
                         "status": r.get("status", "ok") + (" (resumed)" if r.get("resumed") else "")})
    lines += [markdown_table(run_rows), ""]
    if results.get("stages"):
        stage_rows = [{"stage": r["key"], **r.get("metrics", {}), "wall s": r.get("wall_time_s"),
                       "status": r.get("status", "ok") + (" (resumed)" if r.get("resumed") else "")}
                      for r in results["stages"]]
        lines += ["## Stages", "", markdown_table(stage_rows), ""]
    text = "\n".join(lines)
    Path(path).write_text(text)
    return text


def _bars(fig, spec: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    import numpy as np

    panels = [p for p in spec["panels"] if any(v is not None for s in p["series"].values() for v in s)]
    panels = panels or spec["panels"][:1]
    labels = spec["labels"]
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    x = np.arange(len(labels))
    for ax, panel in zip(axes, panels):
        series = panel["series"]
        floor = baseline["metrics"]["linear_h"] if baseline and panel is panels[0] else None
        finite = [v for s in series.values() for v in s if v is not None]
        lo, hi = 0.0, 100.0
        if finite and not panel.get("percent", True):  # another quantity (images/s): from 0
            floor, hi = None, max(finite) * 1.15
        elif finite:
            lo = max(0.0, min(finite + ([floor] if floor is not None else [])) - 10.0)
            hi = min(100.0, max(finite) + 12.0)
        ax.set_ylim(lo, hi)
        width = 0.8 / max(len(series), 1)
        for k, (name, values) in enumerate(series.items()):
            heights = [np.nan if v is None else v for v in values]
            bars = ax.bar(x - 0.4 + width * (k + 0.5), heights, width, label=name)
            for b, v in zip(bars, values):
                ax.annotate("n/a" if v is None else f"{v:.1f}", (b.get_x() + b.get_width() / 2, lo if v is None else v),
                            ha="center", va="bottom", fontsize=7)
        if floor is not None:
            ax.axhline(floor, color="grey", ls="--", lw=1, label="random init (linear)")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=20 if max(len(s) for s in labels) > 6 else 0, fontsize=8)
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel(spec.get("xlabel", ""), fontsize=8)
        ax.set_ylabel(panel.get("ylabel", "top-1 (%)"), fontsize=8)
        if len(series) > 1 or floor is not None:
            ax.legend(fontsize=7, loc="upper left", ncol=2, framealpha=0.8)


def _heatmap(fig, spec: dict[str, Any]) -> None:
    import numpy as np

    ops = spec["ops"]
    m = np.array([[np.nan if v is None else v for v in row] for row in spec["matrix"]], dtype=float)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m, cmap="viridis")
    ax.set_xticks(range(len(ops)))
    ax.set_yticks(range(len(ops)))
    ax.set_xticklabels(ops)
    ax.set_yticklabels(ops)
    ax.set_xlabel("2nd transformation")
    ax.set_ylabel("1st transformation")
    finite = m[np.isfinite(m)]
    mid = float(finite.mean()) if finite.size else 0.0
    for i in range(len(ops)):
        for j in range(len(ops)):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="black" if m[i, j] > mid else "white")
    fig.colorbar(im, ax=ax, label="linear top-1 (%)")
    ax.set_title(spec.get("title", ""), fontsize=8)


def write_figure(spec: dict[str, Any], path: str | Path, baseline: dict[str, Any] | None = None,
                 title: str = "") -> Path:
    """Draw a summary's figure (``bars`` or ``heatmap``) to a PNG file.

    Raises:
        ValueError: an unknown figure kind or a path that does not end in ``.png``.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"figure path must end in .png, got {str(path)!r}")
    kind = spec.get("kind")
    if kind == "bars":
        n_panels = max(1, sum(1 for p in spec["panels"]
                              if any(v is not None for s in p["series"].values() for v in s)))
        fig = new_figure(4.2 * n_panels + 0.8, 3.8)
        _bars(fig, spec, baseline)
    elif kind == "heatmap":
        fig = new_figure(6.0, 5.0)
        _heatmap(fig, spec)
    else:
        raise ValueError(f"unknown figure kind {kind!r}; expected 'bars' or 'heatmap'")
    if title:
        fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path
