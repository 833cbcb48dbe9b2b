"""What a run records as it trains: ``metrics.jsonl`` (one JSON row per log step and per epoch), TensorBoard
scalars when tensorboard is installed, the tracked run of ``--tracking``, and the progress line on the console.
Only rank 0 records."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["MetricsLog", "ProgressLine", "drop_rows_after"]


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


class MetricsLog:
    """Appends rows to ``OUT/metrics.jsonl`` and, when tensorboard is installed, to ``OUT/tensorboard``.

    Args:
        out: the run's output folder.
        enabled: False on ranks other than 0 (every method is then a no-op).
        fresh: a new run (not a resume): an existing ``metrics.jsonl`` is emptied first.
        resumed_at: a resume from the checkpoint at this global step: the rows logged after it (by the run that
            was stopped, and trained again now) are dropped from ``metrics.jsonl`` and hidden in TensorBoard.
        tracker: also hands every row to it (:class:`contrastkit.tracking.TrainingTracker`: MLflow, W&B).
    """

    def __init__(self, out: Path, enabled: bool, fresh: bool = False, resumed_at: int | None = None,
                 tracker: Any = None) -> None:
        self.enabled = enabled
        self.tracker = tracker
        self.file = None
        self.tb = None
        if not enabled:
            return
        if not fresh and resumed_at is not None:
            drop_rows_after(out / "metrics.jsonl", resumed_at)
        self.file = open(out / "metrics.jsonl", "w" if fresh else "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if fresh or resumed_at is None else resumed_at + 1
            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=purge)
        except Exception:  # tensorboard missing: metrics.jsonl still holds everything
            self.tb = None

    def write(self, row: dict[str, Any], step: int) -> None:
        """Append ``row`` (``kind`` ``step`` or ``epoch``); its numbers also go to TensorBoard at ``step``."""
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tracker is not None:  # --tracking: the same row to MLflow / W&B
            self.tracker.log_row(row, step)
        if self.tb is not None and row.get("kind") in ("step", "epoch"):  # other kinds are events (extend)
            prefix = "epoch" if row.get("kind") == "epoch" else "train"
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def drop_rows_after(path: Path, step: int) -> None:
    """Rewrite ``metrics.jsonl`` without its rows of global steps after ``step``, and without a last line cut
    short by a killed process (atomically; a missing file is left missing)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("step", 0) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


class ProgressLine:
    """The console's progress: on a terminal, a tqdm bar (steps done, the epoch, the latest loss, learning rate,
    images/s and kNN); when stderr is not a terminal (a redirected log), one line per epoch instead.

    Args:
        enabled: show it (``--progress``, rank 0).
        total: the run's steps; initial: those done before (resume).
        method: the bar's label.
        epochs: the run's epochs, shown as ``epoch e/E``.
        stream: where it writes (default: stderr).
    """

    def __init__(self, enabled: bool, total: int, initial: int, method: str, epochs: int,
                 stream: TextIO | None = None) -> None:
        self.bar = None
        self.method, self.epochs = method, epochs
        self.fields: dict[str, str] = {}
        self.stream = stream if stream is not None else sys.stderr
        self.lines = enabled and not _is_terminal(self.stream)  # one line per epoch
        if enabled and not self.lines:
            self.bar = tqdm(total=total, initial=initial, desc=method, dynamic_ncols=True, file=self.stream)

    def epoch(self, epoch: int) -> None:
        """Show that epoch ``epoch`` (0-based) is running."""
        if self.bar is not None:
            self.bar.set_description(f"{self.method} epoch {epoch + 1}/{self.epochs}", refresh=False)

    def show(self, **fields: str) -> None:
        """Set (or update) the fields shown after the bar, e.g. ``loss="0.512"``."""
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.set_postfix(self.fields)

    def end_epoch(self, row: dict[str, Any]) -> None:
        """Without a terminal: the epoch's line (its mean loss, seconds and kNN when measured)."""
        if not self.lines:
            return
        parts = [f"{self.method} epoch {row['epoch'] + 1}/{self.epochs}", f"loss {row['loss']:.4f}",
                 f"{row['epoch_time_s']:.1f} s"]
        if "knn_top1" in row:
            parts.append(f"knn {row['knn_top1']:.3f}")
        print(", ".join(parts), file=self.stream, flush=True)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
