"""Shared pieces of the end-to-end benchmarks: the lightly-based peer pipeline and contrastkit's.

The peer recipe (issue 10): CIFAR-stem ResNet-18 of base width 16 (16-32-64-128), channels_last, head
Linear(128, 512)-BN-ReLU-Linear(512, 128); lightly ``SimCLRTransform(input_size=32, cj_strength=0.5,
gaussian_blur=0.0)`` per image in 2 DataLoader workers; lightly ``NTXentLoss(temperature=0.5)``; SGD lr
0.06 x B/256, momentum 0.9, weight decay 5e-4, cosine over all steps; batch 256. Under a time budget the cosine
spans the steps that fit the budget, estimated from a short calibration (:func:`steps_for_budget`), not whole
epochs, so the peer trains for the whole budget as contrastkit's time schedule does.

kNN protocol: k=200, cosine similarity, votes weighted by exp(sim / 0.1), on h (128-d), memory = train/,
queries = test/, images normalised with the CIFAR-10 mean/std.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from contrastkit import build_model
from contrastkit.augment import CIFAR10_MEAN_STD
from contrastkit.data import EvalDataset, decode_to_array, load_dataset

CIFAR = os.environ.get("CONTRASTKIT_CIFAR10", os.path.expanduser("~/.cache/contrastkit/cifar10"))


def require_cifar() -> str:
    if not Path(CIFAR, "train").is_dir():
        raise SystemExit(f"CIFAR-10 JPEGs not found at {CIFAR}: unpack ../shared/data/cifar10-jpg.tar.gz into "
                         f"~/.cache/contrastkit (or set CONTRASTKIT_CIFAR10)")
    return CIFAR


def peer_model(width: float = 0.25, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # the weights, and the loader's shuffling after it
    model = build_model("resnet18", cifar_stem=True, width=width, proj_hidden_dim=512, proj_dim=128)
    return model.to(memory_format=torch.channels_last)


def peer_loader(batch_size: int = 256, workers: int = 2, pin_memory: bool = False):
    from lightly.transforms import SimCLRTransform
    from torchvision.datasets import ImageFolder

    transform = SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
    ds = ImageFolder(os.path.join(require_cifar(), "train"), transform=transform)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True,
                                       num_workers=workers, persistent_workers=workers > 0, pin_memory=pin_memory)


def train_peer(budget_s: float, epochs: int, batch_size: int = 256, workers: int = 2, max_steps: int = 0,
               warmup_steps_excluded: int = 0, log=print, bf16: bool = False, device: str = "cpu",
               width: float = 0.25, total_steps: int = 0, seed: int = 0, knn_every_s: float = 0.0):
    """The lightly-based recipe for ``epochs`` epochs (cosine over all their steps), stopping at ``budget_s``.

    ``total_steps`` > 0 (a time budget): the cosine spans that many steps instead, and training goes on across
    epochs until ``budget_s`` seconds of training (the learning rate stays at its final value, 0, past the planned
    steps). ``bf16`` wraps the peer's forward in ``torch.autocast(device, torch.bfloat16)`` (not something lightly
    does by itself: the benchmark's like-for-like row when contrastkit runs with ``--precision bf16``). On a GPU
    the batches come from pinned memory with non-blocking copies; images/s then counts queued steps (no
    synchronisation per step, as contrastkit's trainer), and ``epoch_times_s`` (each finished epoch, wall time
    from its first batch to its last step done on the device) is the exact figure. ``knn_every_s`` > 0: the kNN
    protocol below each time the training time crosses a multiple of it (an accuracy-over-time curve,
    ``stats["knn_curve"]``); its time is not training time.
    Returns (model, stats) with images/s measured after ``warmup_steps_excluded`` steps.
    """
    from lightly.loss import NTXentLoss

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    model = peer_model(width, seed).to(dev)
    loader = peer_loader(batch_size, workers, pin_memory=cuda)
    criterion = NTXentLoss(temperature=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06 * batch_size / 256, momentum=0.9, weight_decay=5e-4)
    total = total_steps or epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total)
                                                                                            / total)))
    step, train_time, t_measured, imgs_measured = 0, 0.0, 0.0, 0
    done = False
    epoch_times, curve = [], []
    t_wall = time.perf_counter()
    epoch = 0
    while not done and (total_steps or epoch < epochs):
        t0 = t_epoch = time.perf_counter()
        for (x0, x1), _ in loader:
            loss = _peer_step(model, criterion, optimizer, x0, x1, dev, bf16)
            scheduler.step()
            step += 1
            now = time.perf_counter()
            dt = now - t0
            t0 = now
            train_time += dt
            if step > warmup_steps_excluded:
                t_measured += dt
                imgs_measured += x0.shape[0]
            if step % 20 == 0:
                log(f"peer step {step}/{total} loss {loss.item():.3f} {imgs_measured / max(t_measured, 1e-9):.0f} img/s")
            if knn_every_s > 0 and int(train_time // knn_every_s) > int((train_time - dt) // knn_every_s):
                curve.append({"step": step, "train_time_s": round(train_time, 1), "knn_top1": knn_cifar(model.encoder)})
                log(f"peer kNN {curve[-1]['knn_top1']:.4f} at {train_time:.0f} s of training")
                model.train()
                t0 = time.perf_counter()  # the evaluation is not training time
            if (budget_s and train_time >= budget_s) or (max_steps and step >= max_steps):
                done = True
                break
        if done:
            break
        if cuda:
            torch.cuda.synchronize(dev)
        epoch_times.append(round(time.perf_counter() - t_epoch, 2))
        epoch += 1
    stats = {"steps": step, "epochs_done": round(step / len(loader), 2), "train_time_s": round(train_time, 1),
             "epoch_times_s": epoch_times, "knn_curve": curve,
             "images_per_s": round(imgs_measured / max(t_measured, 1e-9), 1),
             "wall_s": round(time.perf_counter() - t_wall, 1)}
    return model, stats


def _peer_step(model, criterion, optimizer, x0, x1, dev, bf16: bool) -> torch.Tensor:
    """One step of the peer recipe: both views through the model, lightly's NT-Xent, SGD."""
    x0 = x0.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
    x1 = x1.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        _, z0 = model(x0)
        _, z1 = model(x1)
    loss = criterion(z0.float(), z1.float())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


_EVAL_CACHE: dict = {}


def knn_cifar(encoder: nn.Module, k: int = 200, temperature: float = 0.1) -> float:
    """The issue-10 kNN protocol on the shared CIFAR-10 JPEGs."""
    from contrastkit.evaluate import extract_features, knn_accuracy

    if not _EVAL_CACHE:
        splits = load_dataset(require_cifar())
        mean, std = CIFAR10_MEAN_STD
        for name, source in (("train", splits.train), ("test", splits.test)):
            images, labels = decode_to_array(source, 32, num_workers=2, cache_key=os.path.abspath(CIFAR) + "/" + name)
            _EVAL_CACHE[name] = EvalDataset(images, labels, mean=mean, std=std)
    ftr, ltr = extract_features(encoder, _EVAL_CACHE["train"], batch_size=1024)
    fte, lte = extract_features(encoder, _EVAL_CACHE["test"], batch_size=1024)
    return float(knn_accuracy(ftr, ltr, fte, lte, k=k, temperature=temperature)["top1"])


def steps_for_budget(images_per_s: float, budget_s: float, batch_size: int) -> int:
    """The steps of ``batch_size`` images that ``budget_s`` seconds of training give at ``images_per_s`` (at least
    1): what the peer's cosine spans under a time budget, a fractional number of epochs."""
    return max(1, int(images_per_s * budget_s / batch_size))
