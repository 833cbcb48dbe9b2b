"""Retrieval against label sets (``eval --protocol retrieval --labels FILE.csv``): a multi-label run scored on its
folder of images, the metrics on a case whose answer is known, and the options that do not fit refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from contrastkit.cli import main
from contrastkit.data import EvalDataset
from contrastkit.evaluate.label_sets import score_label_sets

TINY = ["--encoder", "resnet18", "--width", "0.125", "--cifar-stem", "on", "--batch-size", "12", "--epochs", "1",
        "--num-workers", "0", "--no-progress", "--knn-every", "0", "--device", "cpu"]
NAMES = ("sea", "sky", "sand")


class _MeanColour(nn.Module):
    """h = the image's mean colour: images of one colour are each other's nearest neighbours."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_images_sharing_labels_are_found_first():
    colours = torch.tensor([[250, 0, 0]] * 3 + [[0, 0, 250]] * 3 + [[0, 250, 0]] * 2, dtype=torch.uint8)  # (8, 3)
    images = colours[:, :, None, None].expand(-1, -1, 4, 4).contiguous()  # (8, 3, 4, 4)
    sets = torch.zeros(8, 2)
    sets[:3, 0] = 1  # red: sea; blue: sky; green: no label (references, not queries)
    sets[3:6, 1] = 1
    data = {"images": EvalDataset(images, torch.zeros(8, dtype=torch.long), mean=(0.5,) * 3, std=(0.25,) * 3),
            "label_sets": sets, "label_names": ["sea", "sky"]}
    metrics, recipe = score_label_sets(_MeanColour(), data)
    assert metrics["recall@1"] == 1.0 and metrics["map@r"] == 1.0 and metrics["r_precision"] == 1.0
    assert (metrics["n_images"], metrics["n_labelled"], metrics["n_labels"]) == (8, 6, 2)
    assert recipe["ks"] == [1, 2, 4] and recipe["label_names"] == ["sea", "sky"] and "nmi" not in metrics
    sets[:, :] = 0
    sets[[0, 3, 6], 0] = 1  # "sea" now on one image of each colour: the nearest neighbours are never relevant
    worse, _ = score_label_sets(_MeanColour(), data)
    assert worse["recall@1"] == 0.0 and worse["map@r"] < 0.5


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelsets")
    folder = root / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,labels"]
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
        rows.append(f"img_{i:02d}.png,{';'.join(n for j, n in enumerate(NAMES) if (i >> j) & 1)}")
    labels = root / "tags.csv"
    labels.write_text("\n".join(rows) + "\n")
    run = root / "run"
    assert main(["pretrain", "--method", "supcon-multilabel", "--data", str(folder), "--labels", str(labels),
                 "--max-steps", "2", "--out", str(run), *TINY]) == 0
    return run, folder, labels


def test_eval_scores_a_multilabel_run_against_its_label_sets(multilabel_run, capsys):
    run, folder, labels = multilabel_run
    args = ["eval", "--checkpoint", str(run), "--protocol", "retrieval", "--labels", str(labels), "--device", "cpu",
            "--num-workers", "0"]
    assert main(args) == 0
    saved = json.loads((run / "eval_retrieval_tags.json").read_text())
    m = saved["metrics"]
    assert all(0.0 <= m[k] <= 1.0 for k in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision"))
    assert (m["n_images"], m["n_labelled"], m["n_labels"]) == (12, 10, 3)  # images 0 and 8 have no label
    assert saved["method"] == "supcon-multilabel" and saved["what"] == "h"
    assert main([*args, "--projection"]) == 0  # z = g(h); a rerun replaces eval's own earlier result
    assert json.loads((run / "eval_retrieval_tags.json").read_text())["what"] == "z"


@pytest.mark.parametrize("protocol, message", [("knn", "applies to --protocol retrieval"),
                                               ("all", "applies to --protocol retrieval, not all")])
def test_labels_with_another_protocol_is_refused(multilabel_run, capsys, protocol, message):
    run, _, labels = multilabel_run
    assert main(["eval", "--checkpoint", str(run), "--protocol", protocol, "--labels", str(labels)]) == 2
    assert message in capsys.readouterr().err


def test_eval_without_labels_says_how_to_score_the_folder(multilabel_run, capsys):
    run, _, _ = multilabel_run
    assert main(["eval", "--checkpoint", str(run), "--protocol", "retrieval", "--device", "cpu",
                 "--num-workers", "0"]) == 2
    assert "--protocol retrieval --labels FILE.csv" in capsys.readouterr().err


def test_a_labels_file_that_does_not_fit_is_named(multilabel_run, tmp_path, capsys):
    run, _, _ = multilabel_run
    bad = tmp_path / "other.csv"
    bad.write_text("path,labels\nnot_there.png,sea\n")
    assert main(["eval", "--checkpoint", str(run), "--protocol", "retrieval", "--labels", str(bad), "--device",
                 "cpu", "--num-workers", "0"]) == 2
    assert str(bad) in capsys.readouterr().err


def test_an_export_is_scored_against_the_label_sets_as_its_checkpoint_is(multilabel_run, tmp_path):
    run, _, labels = multilabel_run
    export = tmp_path / "enc.safetensors"
    assert main(["export", "--checkpoint", str(run), "--format", "safetensors", "--out", str(export)]) == 0
    args = ["--protocol", "retrieval", "--labels", str(labels), "--device", "cpu", "--num-workers", "0",
            "--results-dir", str(tmp_path / "results")]
    assert main(["eval", "--checkpoint", str(export), *args]) == 0
    assert main(["eval", "--checkpoint", str(run), *args]) == 0
    from_export = json.loads((tmp_path / "results" / "eval_retrieval_tags_enc.safetensors.json").read_text())
    from_run = json.loads((tmp_path / "results" / "eval_retrieval_tags.json").read_text())
    assert from_export["export_format"] == "safetensors"
    for key in ("recall@1", "recall@8", "map@r", "n_labelled"):
        assert from_export["metrics"][key] == pytest.approx(from_run["metrics"][key], abs=1e-6)
