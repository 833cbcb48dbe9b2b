"""The demo's outputs: summary.json in the promised schema and the three plots (1 epoch, so not its accuracy)."""
import json

import pytest

from contrastkit.demo import run_demo


@pytest.mark.slow
def test_demo_writes_summary_and_plots(tmp_path):
    summary = run_demo(tmp_path / "demo", epochs=1)
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert saved == summary
    assert set(saved) == {"simclr", "random", "pixels"}
    for row in saved.values():
        assert set(row) == {"knn", "linear"} and all(0.0 <= v <= 1.0 for v in row.values())
    assert saved["pixels"]["knn"] > 0.8  # digits are easy in pixel space: a sanity check of the protocol
    for name in ("loss_curve.png", "knn_per_epoch.png", "embedding_2d.png"):
        assert (tmp_path / "demo" / name).read_bytes()[:4] == b"\x89PNG"
