"""The offline demo behind ``make demo``.

SimCLR on scikit-learn's digits (no download), then kNN and linear evaluation of
(a) the SimCLR encoder, (b) the same encoder randomly initialised, (c) raw
pixels, all three on the same seeded augmented views of the images
(:func:`under_augmentation`); a table on stdout, ``summary.json`` and plots in
the output folder. The recipe is chosen on a validation split of the training
images (``scripts/demo_tune.py``, docs/results.md).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sklearn.model_selection import train_test_split

from ..augment import BatchAugment
from ..config import PretrainConfig
from ..data import EvalDataset
from ..data.sources import DigitsImages
from ..evaluate import extract_features, format_table, plot_curves, plot_embedding_2d
from ..evaluate.protocols import evaluation_data, run_protocol
from ..models import CheckpointError, build_model, load_checkpoint_model
from ..runtime.ownership import hold_folder
from ..train import pretrain

__all__ = ["run_demo", "demo_config", "evaluate_encoders", "digits_validation_folder", "CANDIDATES", "DEMO_RECIPE"]

#: k of the kNN evaluation: digits has ~144 training images per class, fewer than the usual k=200.
DEMO_KNN_K = 20

#: The recipe every candidate starts from: a CIFAR-stem ResNet-18 of width 0.25 (16-32-64-128 channels), batched
#: augmentation on the device, SGD with 2 warm-up epochs then cosine decay.
_BASE: dict[str, Any] = dict(
    method="simclr", encoder="resnet18", width=0.25, cifar_stem="on", epochs=25, batch_size=256, lr=0.5,
    lr_scaling="linear", optimizer="sgd", weight_decay=5e-4, warmup_epochs=2, temperature=0.2, num_workers=0,
    augment_on="device", knn_every=5, knn_k=DEMO_KNN_K, log_every=1, crop_scale=(0.3, 1.0),
)
_GRAY = {"augment": {"flip": False, "color": False, "grayscale": False}}
_SMALL_BATCH = {"batch_size": 64, "lr": 0.6, "proj_hidden_dim": 512}  # lr 0.6 x 64/256 = 0.15, as cifar-budget

#: Candidate recipes (overrides of ``_BASE``), compared by ``scripts/demo_tune.py`` on a validation split carved
#: from digits' training split (docs/results.md has the figures); the demo runs :data:`DEMO_RECIPE`.
CANDIDATES: dict[str, dict[str, Any]] = {
    "base": {},
    "gray_noflip": dict(_GRAY),
    "gray_noflip_t01": {**_GRAY, "temperature": 0.1},
    "b64": dict(_SMALL_BATCH),
    # digits are 8 x 8 images: at 16 px a step costs about a third of one at 32 px, so more epochs fit
    "b64_16px": {**_SMALL_BATCH, "size": 16},
    "b64_16px_e60": {**_SMALL_BATCH, "size": 16, "epochs": 60},
    "b64_16px_e60_t05": {**_SMALL_BATCH, "size": 16, "epochs": 60, "temperature": 0.5},
}
DEMO_RECIPE = "b64_16px_e60_t05"


def demo_config(out: str | Path, epochs: int | None = None, seed: int = 0, data: str = "digits",
                recipe: str = DEMO_RECIPE) -> PretrainConfig:
    """The demo's SimCLR run: :data:`CANDIDATES` ``[recipe]`` over the base recipe.

    Args:
        out: the demo's folder; the run goes to ``out/simclr``.
        epochs: pretraining epochs (default: the recipe's).
        seed: the run's seed.
        data: the data set (``scripts/demo_tune.py`` passes a validation folder).
        recipe: a name of :data:`CANDIDATES`.

    Raises:
        ValueError: an unknown recipe.
    """
    if recipe not in CANDIDATES:
        raise ValueError(f"unknown demo recipe {recipe!r}; known: {', '.join(CANDIDATES)}")
    values = {**_BASE, **CANDIDATES[recipe], "data": data, "seed": seed, "out": str(Path(out) / "simclr")}
    if epochs:
        values["epochs"] = epochs
    values["warmup_epochs"] = min(values["warmup_epochs"], values["epochs"])
    values["overwrite"] = True  # the demo reruns from scratch into its folder
    return PretrainConfig(**values)


def digits_validation_folder(root: str | Path, seed: int = 1) -> Path:
    """digits' TRAINING split written as an image folder: 80% in ``train/``, a stratified 20% in ``test/``.

    The folder on which the demo's recipe is chosen; digits' own test split is never read. Written once (a
    ``done`` marker), as PNGs of the 32 px RGB images ``load_dataset("digits")`` gives.
    """
    root = Path(root)
    if (root / "done").exists():
        return root
    train = DigitsImages(True)
    idx_train, idx_val = train_test_split(np.arange(len(train)), test_size=0.2, random_state=seed,
                                          stratify=train.targets)
    for split, indices in (("train", idx_train), ("test", idx_val)):
        for i in indices:
            img, label = train[int(i)]
            path = root / split / str(label) / f"{int(i):04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path)
    (root / "done").write_text("")
    return root


def _pixels(data: dict) -> dict[str, torch.Tensor]:
    def flat(ds):
        return torch.stack([ds[i][0].flatten() for i in range(len(ds))])

    return {"train": (flat(data["train"]), data["train_labels"]), "test": (flat(data["test"]), data["test_labels"])}


def _top1(protocol: str, model, data: dict, seed: int, feats: dict) -> float:
    return float(run_protocol(protocol, model, data, seed=seed, feats=feats, knn_k=DEMO_KNN_K)["metrics"]["top1"])


def under_augmentation(data: dict, cfg: PretrainConfig, seed: int = 0) -> dict:
    """The evaluation data with every train and test image replaced by one view of the pretraining augmentation.

    digits are centred and size-normalised, which is what makes raw pixels a strong kNN baseline; the views are the
    same digits cropped, rescaled, flipped and colour-jittered as :func:`demo_config`'s run sees them (the
    ``cifar`` preset that ``--preset auto`` picks for 32 px digits, with the run's crop scale and overrides). One
    seeded view per image, the same for every encoder, so references and queries come from one distribution.

    Args:
        data: :func:`contrastkit.evaluate.evaluation_data` (uint8 images at the run's size).
        cfg: the run's config (its crop scale and augmentation overrides).
        seed: seed of the views.

    Returns:
        A copy of ``data`` whose ``train`` and ``test`` hold the views.
    """
    augment = BatchAugment.from_preset("cifar", n_views=1, size=data["image_size"], crop_scale=tuple(cfg.crop_scale),
                                       normalize=None, **(cfg.augment or {}))
    generator = torch.Generator().manual_seed(10_000 + seed)
    out = dict(data)
    for split in ("train", "test"):
        ds = data[split]
        view = augment(ds.images, generator=generator)[0]  # (N, 3, S, S) float in [0, 1]
        view = view.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
        mean, std = (None if t is None else t.flatten().tolist() for t in (ds.mean, ds.std))
        out[split] = EvalDataset(view, data[f"{split}_labels"], mean=mean, std=std)
    return out


def evaluate_encoders(model, cfg: PretrainConfig, data: dict, seed: int = 0,
                      augmented: bool = True) -> dict[str, dict[str, float]]:
    """Top-1 of the same kNN and linear protocols for the SimCLR encoder, a random one and raw pixels.

    Args:
        model: the pretrained model.
        cfg: its config (builds the random encoder of the same architecture).
        data: :func:`contrastkit.evaluate.evaluation_data` of the split to score.
        seed: seed of the random encoder, the views and the linear probe.
        augmented: score on :func:`under_augmentation` views (the demo's evaluation); False: on the images as
            they are.

    Returns:
        ``{"simclr": {"knn": .., "linear": ..}, "random": {...}, "pixels": {...}}``.
    """
    if augmented:
        data = under_augmentation(data, cfg, seed)
    torch.manual_seed(seed + 1)
    random_model = build_model(cfg, None, data["image_size"]).eval()
    summary: dict[str, dict[str, float]] = {}
    for name, m in (("simclr", model), ("random", random_model)):
        feats: dict = {}
        summary[name] = {p: _top1(p, m, data, seed, feats) for p in ("knn", "linear")}
    pix = _pixels(data)
    summary["pixels"] = {p: _top1(p, model, data, seed, dict(pix)) for p in ("knn", "linear")}
    return summary


def pretrain_or_resume(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrain the demo's run, resuming it when its folder holds a checkpoint of the same options (a demo stopped
    with Ctrl-C goes on where it stopped; a finished one is not trained again); a run of other options (another
    ``--epochs`` or ``--seed``) is replaced."""
    if (Path(cfg.out) / "last.pt").is_file():
        try:
            return pretrain(dataclasses.replace(cfg, resume=True, overwrite=False))
        except CheckpointError:
            pass  # another demo's run, or a damaged checkpoint: this demo's own folder, trained again
    return pretrain(cfg)


def _plot_runs(cfg: PretrainConfig, out: Path) -> None:
    """``loss_curve.png`` (per step) and ``knn_per_epoch.png`` (per epoch, numbered from 1 as the progress line)."""
    rows = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines() if line]
    steps = [r for r in rows if r.get("kind") == "step"]
    plot_curves(steps, ["loss"], out / "loss_curve.png", x="step", title="SimCLR loss during pretraining")
    knn = [{**r, "epoch": r["epoch"] + 1} for r in rows if r.get("kind") == "epoch" and "knn_top1" in r]
    if knn:
        plot_curves(knn, ["knn_top1"], out / "knn_per_epoch.png", x="epoch",
                    title=f"kNN top-1 (k = {cfg.knn_k}) on the clean test images during pretraining;\n"
                          f"the demo's table scores one augmented view of each image instead")


def run_demo(out: str | Path = "runs/demo", epochs: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Pretrain (or resume), evaluate the three encoders, write ``summary.json`` and plots; returns the summary."""
    out = Path(out)
    entries = ["simclr", "summary.json", "loss_curve.png", "knn_per_epoch.png", "embedding_2d.png"]
    with hold_folder(out, "demo", "experiment", entries):  # one writer; someone else's folder is refused
        return _run_demo(out, epochs, seed)


def _run_demo(out: Path, epochs: int | None, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg = demo_config(out, epochs, seed)
    print(f"[demo] SimCLR pretraining on digits: {cfg.epochs} epochs, batch {cfg.batch_size}, "
          f"{cfg.size or 32} px, {cfg.encoder} width {cfg.width} (recipe {DEMO_RECIPE!r})")
    train_summary = pretrain_or_resume(cfg)
    model, meta, _ = load_checkpoint_model(Path(cfg.out) / "last.pt")
    data = evaluation_data("digits", meta.image_size, meta.mean, meta.std, seed=seed)

    summary = evaluate_encoders(model, cfg, data, seed)

    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot_runs(cfg, out)
    feats, labels = extract_features(model.encoder, data["test"], batch_size=512)
    plot_embedding_2d(feats, labels, out / "embedding_2d.png", method="tsne")

    print("[demo] test top-1 of kNN (k = 20) and a linear probe, on one augmented view of every train and test "
          "image (the pretraining augmentation; the same views for every row):")
    print(format_table(summary))
    print(f"[demo] pretraining {train_summary['train_time_s']:.0f} s, total {time.perf_counter() - t0:.0f} s; "
          f"wrote {out / 'summary.json'}, loss_curve.png, knn_per_epoch.png, embedding_2d.png")
    return summary
