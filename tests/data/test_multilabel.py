"""Multi-label data and training (issue 30): the label CSV of a flat folder, its bad forms (each a clear error naming
the file), and ``--method supcon-multilabel`` from the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.cli import main
from contrastkit.data import read_label_csv
from contrastkit.models import load_checkpoint_model

NAMES = ("sea", "sky", "sand")


def _flat_folder(root, n=12, size=16):
    """A flat folder of n images; image i has the labels of the bits of i (image 0: none)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    rows = ["path,labels"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"img_{i:02d}.png")
        rows.append(f"img_{i:02d}.png,{';'.join(name for j, name in enumerate(NAMES) if (i >> j) & 1)}")
    return root, rows


def _csv(path, rows, encoding="utf-8"):
    path.write_text("\n".join(rows) + "\n", encoding=encoding)
    return path


def _paths(folder):
    return [str(p) for p in sorted(folder.glob("*.png"))]


def test_reads_label_sets_in_the_images_order(tmp_path):
    folder, rows = _flat_folder(tmp_path / "data")
    shuffled = [rows[0], *reversed(rows[1:]), "elsewhere/not_a_training_image.png,sea"]
    (folder / "elsewhere").mkdir()
    Image.new("RGB", (16, 16)).save(folder / "elsewhere" / "not_a_training_image.png")
    labels, names = read_label_csv(_csv(tmp_path / "labels.csv", shuffled, "utf-8-sig"), folder, _paths(folder))
    assert names == sorted(NAMES) and labels.shape == (12, 3) and labels.dtype == torch.float32
    column = {n: c for c, n in enumerate(names)}
    for i in range(12):
        assert {n for n in NAMES if labels[i, column[n]] == 1} == {n for j, n in enumerate(NAMES) if (i >> j) & 1}
    assert labels[0].sum() == 0  # an empty labels column: no label


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows + ["img_99.png,sea", "gone/x.png,sky"], "names 2 file(s) that do not exist under"),
    (lambda rows: [rows[0]] + [r.split(",")[0] + "," for r in rows[1:]], "every training image has an empty label set"),
    (lambda rows: rows[:-2], "has no row for 2 of the 12 training images"),
    (lambda rows: rows + [rows[3]], "line 14: 'img_02.png' is listed twice"),
    (lambda rows: ["file,tags"] + rows[1:], "must have the columns path and labels"),
    (lambda rows: rows + [",sea"], "line 14: the path is empty"),
])
def test_bad_label_files_name_the_problem(tmp_path, edit, message):
    folder, rows = _flat_folder(tmp_path / "data")
    path = _csv(tmp_path / "labels.csv", edit(rows))
    with pytest.raises(ValueError, match="--labels") as info:
        read_label_csv(path, folder, _paths(folder))
    assert message in str(info.value) and str(path) in str(info.value)


def test_missing_files_are_named(tmp_path):
    folder, rows = _flat_folder(tmp_path / "data")
    with pytest.raises(ValueError, match="'img_99.png'"):
        read_label_csv(_csv(tmp_path / "labels.csv", rows + ["img_99.png,sea"]), folder, _paths(folder))


def test_a_file_by_another_name_or_not_text_is_refused(tmp_path):
    folder, rows = _flat_folder(tmp_path / "data")
    with pytest.raises(ValueError, match=r"must be a \.csv file"):
        read_label_csv(_csv(tmp_path / "labels.txt", rows), folder, _paths(folder))
    binary = tmp_path / "labels.csv"
    binary.write_bytes(b"path,labels\n\xff\xfe\x00bad\n")
    with pytest.raises(ValueError, match="is not a UTF-8 CSV file"):
        read_label_csv(binary, folder, _paths(folder))


TINY = ["--encoder", "resnet18", "--width", "0.125", "--cifar-stem", "on", "--batch-size", "4", "--num-workers", "0",
        "--no-progress", "--device", "cpu", "--preset", "cifar", "--size", "16", "--epochs", "1"]


@pytest.mark.parametrize("augment_on", ["device", "workers"])
def test_supcon_multilabel_trains_from_the_command_line(tmp_path, capsys, augment_on):
    folder, rows = _flat_folder(tmp_path / "data")
    labels = _csv(tmp_path / "labels.csv", rows)
    out = tmp_path / "run"
    assert main(["pretrain", "--method", "supcon-multilabel", "--data", str(folder), "--labels", str(labels),
                 "--augment-on", augment_on, "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 3 and np.isfinite(summary["final_loss"])
    assert summary["label_names"] == sorted(NAMES) and summary["label_counts"] == {"sand": 4, "sea": 6, "sky": 6}
    model, meta, config = load_checkpoint_model(out / "last.pt")
    assert meta.method == "supcon-multilabel" and config["labels"] == str(labels)


def test_bad_multilabel_options_fail_at_start(tmp_path, capsys):
    folder, rows = _flat_folder(tmp_path / "data")
    labels = _csv(tmp_path / "labels.csv", rows)
    cases = [
        (["--method", "supcon-multilabel"], "needs --labels FILE.csv"),
        (["--method", "supcon-multilabel", "--labels", str(tmp_path / "nope.csv")], "does not exist"),
        (["--method", "supcon-multilabel", "--labels", str(labels), "--supcon-variant", "in"], "weighted L_out"),
        (["--method", "supcon", "--labels", str(labels)], "--labels applies to multi-label SupCon (--method "
                                                          "supcon-multilabel) only, got --method supcon"),
        (["--method", "supcon-multilabel", "--labels", str(_csv(tmp_path / "bad.csv", rows + ["x.png,sea"]))],
         "names 1 file(s) that do not exist"),
    ]
    for extra, message in cases:
        out = tmp_path / "run"
        assert main(["pretrain", "--data", str(folder), "--out", str(out), *TINY, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not (out / "last.pt").exists()
