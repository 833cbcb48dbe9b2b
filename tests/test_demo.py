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


def test_every_candidate_recipe_is_a_valid_config(tmp_path):
    from contrastkit.demo import CANDIDATES, DEMO_RECIPE, demo_config

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
    from contrastkit.demo import digits_validation_folder

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
