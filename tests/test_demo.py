"""The demo's outputs: summary.json in the promised schema and the three plots (1 epoch, so not its accuracy); its
evaluation under augmentation; its recipe chosen on training images only."""
import dataclasses
import json

import pytest
import torch

from contrastkit.experiments.demo import run_demo


@pytest.mark.slow
def test_demo_writes_summary_and_plots(tmp_path):
    summary = run_demo(tmp_path / "demo", epochs=1)
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert saved == summary
    assert set(saved) == {"simclr", "random", "pixels"}
    for row in saved.values():
        assert set(row) == {"knn", "linear"} and all(0.0 <= v <= 1.0 for v in row.values())
    from contrastkit.experiments.demo import demo_config, evaluate_encoders
    from contrastkit.evaluate import evaluation_data
    from contrastkit.models import load_checkpoint_model

    model, meta, _ = load_checkpoint_model(tmp_path / "demo" / "simclr")
    clean = evaluate_encoders(model, demo_config(tmp_path / "demo", epochs=1),
                              evaluation_data("digits", meta.image_size, meta.mean, meta.std), augmented=False)
    assert clean["pixels"]["knn"] > 0.8  # digits are easy in pixel space: a sanity check of the protocol
    assert saved["pixels"]["knn"] < clean["pixels"]["knn"]  # the demo scores views, where pixels lose their edge
    for name in ("loss_curve.png", "knn_per_epoch.png", "embedding_2d.png"):
        assert (tmp_path / "demo" / name).read_bytes()[:4] == b"\x89PNG"


def test_demo_rerun_resumes_its_run_and_other_options_replace_it(tmp_path):
    """Issue 31: a demo stopped with Ctrl-C can go on: a rerun resumes the run of the same options (a finished one
    is not trained again); other options start it again."""
    from contrastkit.experiments.demo import demo_config, pretrain_or_resume
    from contrastkit.models import load_checkpoint

    cfg = dataclasses.replace(demo_config(tmp_path, epochs=2), max_steps=3, knn_every=0, progress=False)
    first = pretrain_or_resume(cfg)
    assert first["global_step"] == 3 and first["stop_reason"] == "max_steps"
    again = pretrain_or_resume(dataclasses.replace(cfg, max_steps=5))  # as if the first run had been stopped
    steps = [json.loads(line)["step"] for line in (tmp_path / "simclr" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "step"]
    assert again["global_step"] == 5 and steps == sorted(set(steps))  # resumed at 3: no step logged twice
    other = pretrain_or_resume(dataclasses.replace(cfg, seed=1, max_steps=2))  # another demo's options
    assert other["global_step"] == 2 and load_checkpoint(tmp_path / "simclr")["config"]["seed"] == 1


def test_every_candidate_recipe_is_a_valid_config(tmp_path):
    from contrastkit.experiments.demo import CANDIDATES, DEMO_RECIPE, demo_config

    assert DEMO_RECIPE in CANDIDATES
    for name in CANDIDATES:
        cfg = demo_config(tmp_path, recipe=name)
        assert cfg.method == "simclr" and cfg.data == "digits" and cfg.warmup_epochs <= cfg.epochs
    assert demo_config(tmp_path, epochs=1).epochs == 1 and demo_config(tmp_path, epochs=1).warmup_epochs == 1
    with pytest.raises(ValueError, match="unknown demo recipe 'nope'"):
        demo_config(tmp_path, recipe="nope")


def test_the_recipe_is_chosen_on_a_split_of_the_training_images_only(tmp_path):
    """scripts/demo_tune.py's folder: digits' 1,437 training images, 80/20, stratified; no test image in it."""
    import numpy as np
    from PIL import Image

    from contrastkit.data.sources import DigitsImages
    from contrastkit.experiments.demo import digits_validation_folder

    root = digits_validation_folder(tmp_path / "val")
    train = DigitsImages(True)
    files = {split: sorted((root / split).rglob("*.png")) for split in ("train", "test")}
    index = {split: {int(p.stem) for p in paths} for split, paths in files.items()}
    assert not index["train"] & index["test"] and index["train"] | index["test"] == set(range(len(train)))
    assert abs(len(index["test"]) - 0.2 * len(train)) <= 1  # 288 of 1,437
    counts = np.bincount([int(p.parent.name) for p in files["test"]], minlength=10)
    assert counts.min() >= 25  # stratified: every class ~29 of 288
    for path in files["test"][::50]:  # the file is the training image of its name, with its label
        img, label = train[int(path.stem)]
        assert int(path.parent.name) == label
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(img))
    test_images = {np.asarray(DigitsImages(False)[i][0]).tobytes() for i in range(len(DigitsImages(False)))}
    train_images = {np.asarray(train[i][0]).tobytes() for i in range(len(train))}
    assert test_images - train_images  # the test split holds images the folder cannot contain


def test_under_augmentation_gives_every_encoder_the_same_seeded_views():
    from contrastkit.data import EvalDataset
    from contrastkit.experiments.demo import demo_config, under_augmentation

    g = torch.Generator().manual_seed(0)
    images = {s: torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8) for s, n in (("train", 8), ("test", 4))}
    labels = {s: torch.arange(len(x)) % 3 for s, x in images.items()}
    data = {"image_size": 16, "num_classes": 3, **{f"{s}_labels": labels[s] for s in images},
            **{s: EvalDataset(images[s], labels[s], mean=(0.5,) * 3, std=(0.25,) * 3) for s in images}}
    cfg = demo_config("/tmp/unused")
    a, b, c = under_augmentation(data, cfg, 0), under_augmentation(data, cfg, 0), under_augmentation(data, cfg, 1)
    for split in ("train", "test"):
        assert a[split].images.dtype == torch.uint8 and a[split].images.shape == images[split].shape
        assert torch.equal(a[split].images, b[split].images)  # seeded: the same views each call
        assert not torch.equal(a[split].images, images[split]) and not torch.equal(a[split].images, c[split].images)
        assert torch.equal(a[f"{split}_labels"], labels[split]) and torch.equal(a[split].mean, data[split].mean)
    assert data["train"].images is images["train"]  # the input is left as it was
