"""Throughput of two-view SimCLR-CIFAR augmentation: BatchAugment against torchvision per image.

Both sides produce the same thing: two normalised float views (3, 32, 32) of
each 32x32 image with the ``cifar`` preset (random resized crop, flip, colour
jitter 0.5 with p 0.8, grayscale p 0.2, no blur).

- per image, torchvision: a plain ``torchvision.transforms.v2`` pipeline on PIL
  images (RandomResizedCrop, RandomHorizontalFlip, RandomApply(ColorJitter(0.4,
  0.4, 0.4, 0.1), 0.8), RandomGrayscale(0.2), ToImage, ToDtype, Normalize), and
  contrastkit's ``SimCLRTransform.from_preset("cifar")`` (the same ops); the
  ratios use the faster of the two.
- batched: ``BatchAugment.from_preset("cifar", n_views=2)`` on uint8 batches.

Per core: one thread (``torch.set_num_threads(1)``), per-image in the main
process. Full machine: BatchAugment with ``--threads`` torch threads; per image
through a ``DataLoader`` with ``--workers`` workers (batch ``--batch-size``,
default collation, as in training).

Images: the CIFAR-10 training JPEGs under ``--root`` (default
``~/.cache/contrastkit/cifar10/train/<class>/*.jpg``), decoded once into memory
(PIL images for the per-image side, one uint8 tensor for the batched side), or
random images with ``--random``. The last line printed is JSON with the
figures and the ratios.

    python benchmarks/augment_bench.py            # CIFAR-10 JPEGs, 4096 images
    python benchmarks/augment_bench.py --random   # random 32x32 images
    OMP_WAIT_POLICY=PASSIVE python benchmarks/augment_bench.py  # on a machine shared with other jobs

On a machine where other processes compete for the cores, OpenMP's default
spin-waiting makes every multi-threaded torch op wait for a descheduled thread;
``OMP_WAIT_POLICY=PASSIVE`` avoids that (it only matters for the 2-thread row).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from contrastkit.augment import CIFAR10_MEAN_STD, BatchAugment, MultiViewTransform, SimCLRTransform


def torchvision_cifar_pipeline() -> v2.Compose:
    """The usual SimCLR CIFAR view (colour strength 0.5) written with torchvision v2 only."""
    mean, std = CIFAR10_MEAN_STD
    return v2.Compose([
        v2.RandomResizedCrop(32, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])


def load_images(root: str, n: int, random: bool, seed: int) -> tuple[list[Image.Image], torch.Tensor, str]:
    """n images as PIL RGB images and as one uint8 tensor (n, 3, 32, 32)."""
    if random:
        g = torch.Generator().manual_seed(seed)
        batch = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        pil = [Image.fromarray(img.permute(1, 2, 0).numpy(), mode="RGB") for img in batch]
        return pil, batch, "random uint8"
    classes = sorted(p for p in Path(root).expanduser().iterdir() if p.is_dir()) if Path(root).expanduser().is_dir() else []
    if not classes:
        raise SystemExit(f"no class folders under {root}; unpack the CIFAR-10 JPEGs there or pass --random")
    per = -(-n // len(classes))
    files = [f for c in classes for f in sorted(c.glob("*.jpg"))[:per]][:n]
    pil = []
    for f in files:
        with Image.open(f) as im:
            pil.append(im.convert("RGB"))
    if any(im.size != (32, 32) for im in pil):
        raise SystemExit("expected 32x32 images")
    batch = torch.from_numpy(np.stack([np.asarray(im) for im in pil])).permute(0, 3, 1, 2).contiguous()
    return pil, batch, f"CIFAR-10 train JPEGs ({len(files)} from {len(classes)} classes)"


class _Views(Dataset):
    def __init__(self, images: list[Image.Image], transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i])


def per_image_rate(images: list[Image.Image], transform, seconds: float) -> float:
    """Images/s of two views per image in this process (one thread)."""
    n, i = 0, 0
    t0 = time.perf_counter()
    while True:
        img = images[i]
        transform(img)
        transform(img)
        n += 1
        i = (i + 1) % len(images)
        if n % 64 == 0 and time.perf_counter() - t0 >= seconds:
            return n / (time.perf_counter() - t0)


def batched_rate(aug: BatchAugment, batch: torch.Tensor, batch_size: int, seconds: float) -> float:
    n, i = 0, 0
    N = batch.shape[0]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x = batch[i : i + batch_size]
        if x.shape[0] < batch_size:
            i, x = 0, batch[:batch_size]
        aug(x)
        n += x.shape[0]
        i += batch_size
    return n / (time.perf_counter() - t0)


def loader_rate(images: list[Image.Image], transform, workers: int, batch_size: int, epochs: int) -> float:
    loader = DataLoader(_Views(images, MultiViewTransform(transform, n_views=2)), batch_size=batch_size,
                        shuffle=True, num_workers=workers, persistent_workers=workers > 0, drop_last=True)
    for _ in loader:  # warm-up epoch: starts the workers
        pass
    n = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for views in loader:
            n += views[0].shape[0]
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.expanduser("~/.cache/contrastkit/cifar10/train"))
    ap.add_argument("--random", action="store_true", help="random images instead of the CIFAR-10 JPEGs")
    ap.add_argument("--n-images", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each single-process measurement")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best of each is reported")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the full-machine batched figure")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the full-machine per-image figure")
    ap.add_argument("--loader-epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    pil, batch, source = load_images(args.root, args.n_images, args.random, args.seed)
    tv = torchvision_cifar_pipeline()
    ck = SimCLRTransform.from_preset("cifar")
    aug = BatchAugment.from_preset("cifar", n_views=2)

    results: dict[str, list[float]] = {k: [] for k in ("tv_1", "ck_1", "batch_1", "tv_loader", "ck_loader", "batch_full")}
    for _ in range(args.repeats):  # interleaved, so that load from other processes hits every side alike
        torch.set_num_threads(1)
        results["tv_1"].append(per_image_rate(pil, tv, args.seconds))
        results["ck_1"].append(per_image_rate(pil, ck, args.seconds))
        results["batch_1"].append(batched_rate(aug, batch, args.batch_size, args.seconds))
        torch.set_num_threads(args.threads)
        results["batch_full"].append(batched_rate(aug, batch, args.batch_size, args.seconds))
        torch.set_num_threads(1)
        results["tv_loader"].append(loader_rate(pil, tv, args.workers, args.batch_size, args.loader_epochs))
        results["ck_loader"].append(loader_rate(pil, ck, args.workers, args.batch_size, args.loader_epochs))

    best = {k: max(v) for k, v in results.items()}
    med = {k: statistics.median(v) for k, v in results.items()}
    per_image_1 = max(best["tv_1"], best["ck_1"])
    per_image_full = max(best["tv_loader"], best["ck_loader"])
    rows = [
        ("per image, torchvision v2 (PIL)", "1 thread", "tv_1"),
        ("per image, contrastkit SimCLRTransform (PIL)", "1 thread", "ck_1"),
        (f"BatchAugment (batch {args.batch_size})", "1 thread", "batch_1"),
        ("per image, torchvision v2, DataLoader", f"{args.workers} workers", "tv_loader"),
        ("per image, SimCLRTransform, DataLoader", f"{args.workers} workers", "ck_loader"),
        (f"BatchAugment (batch {args.batch_size})", f"{args.threads} threads", "batch_full"),
    ]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"two-view SimCLR-CIFAR augmentation, {source}, {args.n_images} images; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {load}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
          f"best / median of {args.repeats} (images/s)")
    print(f"{'pipeline':48s} {'threads':>10s} {'best':>10s} {'median':>10s}")
    for name, threads, key in rows:
        print(f"{name:48s} {threads:>10s} {best[key]:10.0f} {med[key]:10.0f}")
    out = {
        "source": source,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "batch_size": args.batch_size,
        "images_per_s": {k: round(v, 1) for k, v in best.items()},
        "per_core_ratio": round(best["batch_1"] / per_image_1, 2),
        "full_machine_ratio": round(best["batch_full"] / per_image_full, 2),
        "median_per_core_ratio": round(med["batch_1"] / max(med["tv_1"], med["ck_1"]), 2),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
