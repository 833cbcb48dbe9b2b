"""Semi-supervised SupCon: ``--method supcon --labeled-fraction f`` keeps a seeded class-balanced share of
the labels and marks the rest -1 (own views only) in the labels the loss sees."""
from __future__ import annotations

import json

import torch

from conftest import TINY, make_image_folder
from contrastkit import losses
from contrastkit.cli import main
from contrastkit.config import PretrainConfig
from contrastkit.data import load_dataset
from contrastkit.evaluate import class_balanced_subset
from contrastkit.methods import DataInfo, get_method
from contrastkit.methods.labels import class_labels, unlabelled


def test_labels_for_training_marks_the_unlabelled_half(tmp_path):
    folder = make_image_folder(tmp_path / "data")  # 3 classes x 12 training images
    splits = load_dataset(str(folder))
    targets = list(splits.train.targets)
    data = DataInfo(targets, list(splits.classes), 16, str(folder))
    labels = class_labels("supcon", data, 0.5, seed=0)
    kept = class_balanced_subset(torch.as_tensor(targets), 0.5, seed=0)
    assert (labels == -1).sum() == 18 and (labels >= 0).sum() == 18  # half of 36, 6 per class
    assert torch.equal(torch.nonzero(labels >= 0).squeeze(1), kept)  # the same seeded subset
    assert torch.equal(labels[kept], torch.as_tensor(targets)[kept])  # kept labels are the true ones
    for c in range(3):
        assert int((labels == c).sum()) == 6
    assert torch.equal(labels, class_labels("supcon", data, 0.5, seed=0))  # reproducible
    cfg = PretrainConfig(method="supcon", data=str(folder), labeled_fraction=0.5, seed=0, temperature=0.1)
    assert torch.equal(get_method("supcon").build(cfg, data).labels, labels)  # what the method trains with
    full = class_labels("supcon", data)
    assert (full >= 0).all()
    assert (unlabelled(data) == -1).all()


def test_pretrain_passes_minus_one_for_about_half(tmp_path, monkeypatch, capsys):
    folder = make_image_folder(tmp_path / "data")
    seen: list[torch.Tensor] = []
    original = losses.SupConLoss.forward

    def recording(self, features, labels=None, *args, **kwargs):
        seen.append(labels.detach().cpu().clone())
        return original(self, features, labels, *args, **kwargs)

    monkeypatch.setattr(losses.SupConLoss, "forward", recording)
    out = tmp_path / "run"
    rc = main(["pretrain", "--method", "supcon", "--labeled-fraction", "0.5", "--data", str(folder),
               "--epochs", "1", "--knn-every", "0", "--augment-on", "device", "--size", "16", "--out", str(out), *TINY])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["global_step"] == 3  # 36 images / batch 12, one epoch
    assert len(seen) == 3
    labels = torch.cat(seen)
    assert labels.numel() == 36
    unlabelled = int((labels == -1).sum())
    assert unlabelled == 18  # every sample seen once: exactly the unlabelled half
    assert set(labels[labels >= 0].tolist()) <= {0, 1, 2}
