"""Figures: 2-D embedding scatter plots and training curves (PNG, matplotlib Agg).

The figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas
directly, so no pyplot state or display is involved and the global backend is
left alone.

* :func:`plot_embedding_2d` projects embeddings to 2-D with PCA (on the
  L2-normalised embeddings, via an SVD in torch) or t-SNE (sklearn ``TSNE``,
  cosine metric, PCA initialisation, perplexity min(30, (n - 1) / 3)) and
  colours points by label. At most ``max_points`` samples [5000] are drawn,
  chosen with a seeded generator, since t-SNE is quadratic in n.
* :func:`plot_curves` draws one panel per metric from metrics rows (the lines
  of ``metrics.jsonl``), against ``x`` [``"epoch"``] when the rows have it and
  the row number otherwise; rows without a metric (kNN every few epochs) are
  skipped for that panel.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import as_features, as_labels, check_positive_int

__all__ = ["plot_embedding_2d", "plot_curves", "EMBEDDING_METHODS"]

EMBEDDING_METHODS = ("pca", "tsne")


def new_figure(width: float, height: float):
    """A matplotlib Figure of ``width`` x ``height`` inches at 100 dpi on the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def _project_2d(x: torch.Tensor, method: str, seed: int) -> np.ndarray:
    """2-D coordinates of the rows of ``x``.

    Shape:
        x (N, D) -> (N, 2).
    """
    x = F.normalize(x, dim=1)  # (N, D)
    if method == "pca":
        centred = x - x.mean(dim=0, keepdim=True)  # (N, D)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # vh (min(N, D), D)
        coords = centred @ vh[:2].T  # (N, <=2)
        if coords.shape[1] < 2:
            coords = F.pad(coords, (0, 2 - coords.shape[1]))  # (N, 2)
        return coords.numpy()
    from sklearn.manifold import TSNE

    n = x.shape[0]
    if n < 4:
        raise ValueError(f"method='tsne' needs at least 4 samples, got {n}")
    perplexity = min(30.0, (n - 1) / 3.0)
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    return tsne.fit_transform(x.numpy().astype(np.float32))


def plot_embedding_2d(
    features: torch.Tensor,
    labels: torch.Tensor,
    path: str | Path,
    method: str = "pca",
    max_points: int = 5000,
    seed: int = 0,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Scatter plot of embeddings in 2-D, coloured by label.

    Args:
        features: the embeddings.
        labels: their class indices.
        path: output ``.png`` (parent directories created).
        method: ``"pca"`` or ``"tsne"``.
        max_points: draw a seeded random subset of at most this many points.
        seed: seed of the subset and of t-SNE.
        title: figure title (default: the method and point count).
        class_names: legend names indexed by label (legend shown for <= 20 classes).

    Returns:
        The path written.

    Raises:
        TypeError: for wrongly typed inputs.
        ValueError: for mismatched lengths, non-finite features, an unknown
            method, a path not ending in ``.png``, or too few points for t-SNE.

    Shape:
        features (N, D), labels (N,).
    """
    x = as_features("features", features).detach().cpu()
    y = as_labels("labels", labels, x.shape[0], n_name="features").cpu()
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"method must be one of {EMBEDDING_METHODS}, got {method!r}")
    max_points = check_positive_int("max_points", max_points)
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    if x.shape[0] > max_points:
        keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_points]
        x, y = x[keep], y[keep]
    coords = _project_2d(x, method, seed)  # (n, 2)

    fig = new_figure(6.0, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    classes = torch.unique(y).tolist()
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "viridis"]
    for i, c in enumerate(classes):
        mask = (y == c).numpy()
        colour = palette(i / max(len(classes) - 1, 1)) if len(classes) > 20 else palette(i)
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        ax.scatter(coords[mask, 0], coords[mask, 1], s=4, color=colour, label=name, alpha=0.8)
    if len(classes) <= 20:
        ax.legend(markerscale=3, fontsize="small", loc="best")
    ax.set_title(title or f"{method.upper()} of {x.shape[0]} embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)


def plot_curves(
    records: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    path: str | Path,
    x: str = "epoch",
    title: str | None = None,
) -> Path:
    """Plot metrics against epochs from a list of metric rows, one panel per key.

    Args:
        records: rows such as the lines of ``metrics.jsonl``
            (e.g. ``{"epoch": 3, "loss": 4.1, "knn_top1": 0.52}``).
        keys: the metrics to draw (e.g. ``["loss", "knn_top1"]``).
        path: output ``.png`` (parent directories created).
        x: the key used as the horizontal axis; the row number is used when no
            row has it.
        title: figure title.

    Returns:
        The path written.

    Raises:
        TypeError: if ``records`` is not a sequence of mappings or ``keys`` is
            not a sequence of str.
        ValueError: if ``records`` or ``keys`` is empty, a key appears in no
            row (the message lists the keys that exist), or ``path`` does not
            end in ``.png``.
    """
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence):
        raise TypeError(f"records must be a list of dicts, got {type(records).__name__}")
    if not records:
        raise ValueError("records is empty: expected at least one metrics row")
    for i, row in enumerate(records):
        if not isinstance(row, Mapping):
            raise TypeError(f"records[{i}] must be a dict, got {type(row).__name__}")
    if isinstance(keys, str) or not isinstance(keys, Sequence) or not keys:
        raise TypeError(f"keys must be a non-empty list of metric names, got {keys!r}")
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    available = sorted({k for row in records for k in row})
    missing = [k for k in keys if not any(k in row for row in records)]
    if missing:
        raise ValueError(f"keys {missing} appear in no record; available keys: {available}")
    use_x = any(x in row for row in records)

    fig = new_figure(4.5 * len(keys), 3.5)
    for j, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), j + 1)
        xs, ys = [], []
        for i, row in enumerate(records):
            if key in row and row[key] is not None:
                xs.append(row.get(x, i) if use_x else i)
                ys.append(float(row[key]))
        ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3)
        ax.set_xlabel(x if use_x else "row")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
