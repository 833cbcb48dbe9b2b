"""Few-label fine-tuning of the whole encoder (SimCLR Sec. 6, App. B.5).

SimCLR fine-tunes the pretrained encoder together with a new linear layer on
1% or 10% of the ImageNet labels: SGD with Nesterov momentum 0.9, batch 4096,
learning rate 0.05 x batch / 256, no warm-up, no regularisation (no weight
decay), random crop with left-right flip as the only augmentation, 60 epochs
for 1% and 30 epochs for 10% of the labels.

Adaptation for small models and data sets, as implemented by :func:`finetune`:

* **Batch.** [64] instead of 4096: with 1% of CIFAR-10 (500 images) a batch of
  4096 would be more than the whole labelled set. The learning rate follows the
  same scaling rule, ``lr = 0.05 x batch_size / 256`` unless given.
* **Schedule.** Per-step cosine decay to zero, no warm-up [adaptation: it
  makes the end point of a short run less sensitive to the last few noisy
  steps]. Weight decay [0], as in SimCLR.
* **Epochs.** [60], the 1% setting; pass ``epochs=30`` for the 10% one.
* **Augmentation.** :func:`random_crop_flip` on the batch, in torch: zero-pad
  by 4 pixels, crop back to H x W at a random offset per sample, flip
  left-right with probability 0.5 (the CIFAR version of "random crop + flip").
  Images are already normalised, so the padding value 0 is the data-set mean.
  Any callable (B, 3, H, W) -> (B, 3, H, W) can replace it;
  ``batch_augment=None`` turns augmentation off.
* **BatchNorm.** The encoder is in train mode while fine-tuning (BatchNorm
  statistics adapt to the labelled subset). A final mini-batch of exactly one
  sample is dropped, since BatchNorm cannot normalise a single sample with 1x1
  feature maps.
* **Evaluation.** Top-1 / top-5 on the full test set, encoder in eval mode.
* **Copy.** The encoder is deep-copied first (``copy_encoder=True``), so the
  caller's pretrained weights are untouched and the other protocols can run on
  the same encoder afterwards.
* **Seeding.** The head initialisation, shuffling and augmentation use the
  torch RNG seeded with ``seed`` inside ``torch.random.fork_rng``, so the
  caller's global RNG state is unchanged.

The **from-scratch control** (the "supervised baseline" SimCLR compares
against in its semi-supervised results) is the same
call with a freshly initialised encoder, e.g.
``finetune(create_encoder("resnet18", cifar_stem=True), ...)``: everything but
the initial weights is identical, so the difference between the two numbers is
what pretraining buys.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..models import FineTunedNetwork, HeadPrefix, head_prefix_of
from ._checks import check_positive_float, check_positive_int, resolve_device
from .classify import classifier_accuracy

__all__ = ["finetune", "random_crop_flip"]


def random_crop_flip(
    batch: torch.Tensor,
    padding: int = 4,
    flip_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per sample.

    Each image is zero-padded by ``padding`` pixels on every side and cropped
    back to its size at an offset drawn uniformly in [0, 2 * padding] on each
    axis, then flipped left-right with probability ``flip_prob``.

    Args:
        batch: float image batch.
        padding: pixels of zero padding (>= 0; 0 disables the crop).
        flip_prob: probability of a horizontal flip, in [0, 1].
        generator: CPU ``torch.Generator`` for the random draws (default: the
            global torch RNG).

    Returns:
        The augmented batch, on the same device and dtype.

    Raises:
        TypeError: if ``batch`` is not a floating-point tensor.
        ValueError: if ``batch`` is not 4-D, ``padding`` < 0 or ``flip_prob``
            is not in [0, 1].

    Shape:
        batch (B, C, H, W) -> (B, C, H, W).
    """
    if not isinstance(batch, torch.Tensor) or not batch.is_floating_point():
        got = batch.dtype if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise TypeError(f"batch must be a floating-point tensor, got {got}")
    if batch.dim() != 4:
        raise ValueError(f"batch must have shape (B, C, H, W), got {tuple(batch.shape)}")
    padding = check_positive_int("padding", padding, minimum=0)
    if isinstance(flip_prob, bool) or not isinstance(flip_prob, (int, float)) or not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob!r}")
    b, _, h, w = batch.shape
    out = batch
    if padding > 0:
        padded = F.pad(batch, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(batch.device)  # (B,)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(batch.device)  # (B,)
        rows = oy[:, None] + torch.arange(h, device=batch.device)  # (B, H)
        cols = ox[:, None] + torch.arange(w, device=batch.device)  # (B, W)
        bidx = torch.arange(b, device=batch.device)[:, None, None]  # (B, 1, 1)
        out = padded[bidx, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        out = out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
    if flip_prob > 0:
        flip = (torch.rand(b, generator=generator) < flip_prob).to(batch.device)  # (B,)
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)  # (B, C, H, W)
    return out


def _augment_name(batch_augment: Callable | None) -> str:
    if batch_augment is None:
        return "none"
    if batch_augment is random_crop_flip:
        return "random_crop_flip(padding=4, flip_prob=0.5)"
    return getattr(batch_augment, "__name__", type(batch_augment).__name__)


def _check_indices(indices: Any, n: int) -> torch.Tensor:
    if isinstance(indices, torch.Tensor):
        idx = indices
    elif isinstance(indices, Sequence) or hasattr(indices, "__array__"):
        idx = torch.as_tensor(indices)
    else:
        raise TypeError(f"indices must be a LongTensor or sequence of ints, got {type(indices).__name__}")
    if idx.is_floating_point() or idx.dtype == torch.bool or idx.dim() != 1:
        raise TypeError(f"indices must be a 1-D integer tensor, got dtype {idx.dtype} and shape {tuple(idx.shape)}")
    if idx.numel() == 0:
        raise ValueError("indices is empty: expected at least one training sample")
    idx = idx.long().cpu()
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise ValueError(
            f"indices must lie in [0, {n - 1}] for a train_dataset of {n} samples, "
            f"got range [{int(idx.min())}, {int(idx.max())}]"
        )
    return idx


def _feature_dim(encoder: nn.Module, dataset: Dataset, device: torch.device) -> int:
    dim = getattr(encoder, "feature_dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    x = dataset[0][0]
    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    try:
        with torch.no_grad():
            out = encoder(x.unsqueeze(0).to(device))  # (1, F)
    finally:
        for m, mode in modes:
            m.training = mode
    if out.dim() != 2:
        raise ValueError(f"the encoder must map (B, 3, H, W) to (B, F), got output shape {tuple(out.shape)}")
    return int(out.shape[1])


def _training_batch(x: torch.Tensor, y: Any, num_classes: int, batch_augment: Callable | None,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch on ``device``, its labels checked against ``num_classes``, augmented when asked."""
    x = x.to(device, non_blocking=True)  # (B, 3, H, W)
    y = torch.as_tensor(y).long().to(device)  # (B,)
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(
            f"train_dataset has label {int(y.max()) if int(y.max()) >= num_classes else int(y.min())} "
            f"but num_classes={num_classes}; labels must lie in [0, {num_classes - 1}]"
        )
    if batch_augment is not None:
        x_aug = batch_augment(x)
        if not isinstance(x_aug, torch.Tensor) or x_aug.shape != x.shape:
            got = tuple(x_aug.shape) if isinstance(x_aug, torch.Tensor) else type(x_aug).__name__
            raise ValueError(f"batch_augment must keep the batch shape {tuple(x.shape)}, returned {got}")
        x = x_aug
    return x, y


def _parts(encoder: nn.Module, head_layer: Any) -> tuple[nn.Module, HeadPrefix | None]:
    """The encoder f (a model's ``.encoder``; its head is discarded, as in SimCLR) and, for ``head_layer`` L > 0,
    the first L blocks of the model's MLP head (range checked here, before any work)."""
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
    if isinstance(head_layer, bool) or not isinstance(head_layer, int):
        raise TypeError(f"head_layer must be an int, got {type(head_layer).__name__}")
    if not isinstance(getattr(encoder, "encoder", None), nn.Module):
        if head_layer:
            raise ValueError(f"head_layer={head_layer} needs a model with .encoder and .head (a ContrastiveModel); "
                             f"got a bare {type(encoder).__name__}")
        return encoder, None
    return encoder.encoder, (head_prefix_of(encoder, head_layer, 0) if head_layer else None)


def _check_seed_augment_test(seed: Any, batch_augment: Any, test_dataset: Dataset) -> None:
    """An int seed, a callable (or no) batch augmentation and a test set with at least one sample."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if batch_augment is not None and not callable(batch_augment):
        raise TypeError(f"batch_augment must be callable or None, got {type(batch_augment).__name__}")
    if len(test_dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("test_dataset is empty: expected at least one (image, label) sample")


def _model_and_optimizer(encoder: nn.Module, prefix: HeadPrefix | None, train_dataset: Dataset, num_classes: int,
                         lr: float, weight_decay: float, device: torch.device, copy_encoder: bool
                         ) -> tuple[FineTunedNetwork, torch.optim.Optimizer]:
    """Encoder, head prefix (None: h itself) and a new linear layer on ``device``, copied first with
    ``copy_encoder``, and their SGD (momentum 0.9, Nesterov)."""
    parts = nn.ModuleList([encoder] + ([prefix] if prefix is not None else []))
    parts = copy.deepcopy(parts) if copy_encoder else parts  # the prefix shares the head's layers
    net = parts[0].to(device)
    prefix = HeadPrefix([], _feature_dim(net, train_dataset, device)) if prefix is None else parts[1].to(device)
    model = FineTunedNetwork(net, prefix, nn.Linear(prefix.out_dim, num_classes).to(device))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    return model, optimizer


def _train(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, epochs: int, lr: float,
           num_classes: int, batch_augment: Callable | None, device: torch.device, use_amp: bool) -> int:
    """``epochs`` passes of SGD with a per-step cosine schedule from ``lr``; returns the number of steps."""
    total_steps = epochs * len(loader)
    step = 0
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            x, y = _training_batch(x, y, num_classes, batch_augment, device)  # (B, 3, H, W), (B,)
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / total_steps))
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)  # (B, C)
            loss = F.cross_entropy(logits.float(), y)
            if not math.isfinite(loss.item()):
                raise RuntimeError(
                    f"fine-tuning diverged: loss is {loss.item()} at step {step} of {total_steps} (lr={lr}); "
                    "try a smaller lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return total_steps


#: the parts of the fine-tuning recipe that no argument changes (SimCLR App. B.5)
_FIXED_RECIPE = {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "schedule": "cosine (per step, no warm-up)"}


def _subset_loader(dataset: Dataset, idx: torch.Tensor, batch_size: int, num_workers: int, seed: int) -> DataLoader:
    """Shuffled batches of ``dataset[idx]``, seeded; a final batch of exactly one image is dropped (BatchNorm)."""
    n = int(idx.numel())
    return DataLoader(Subset(dataset, idx.tolist()), batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed), drop_last=n > 1 and n % batch_size == 1)


def _check_sizes(num_classes: int, epochs: int, batch_size: int, eval_batch_size: int,
                 num_workers: int) -> tuple[int, int, int, int, int]:
    """The integer options, each checked against its minimum (2 classes, 1 epoch, 1 image a batch, 0 workers)."""
    return tuple(check_positive_int(name, value, minimum) for name, value, minimum in (  # type: ignore[return-value]
        ("num_classes", num_classes, 2), ("epochs", epochs, 1), ("batch_size", batch_size, 1),
        ("eval_batch_size", eval_batch_size, 1), ("num_workers", num_workers, 0)))


def finetune(
    encoder: nn.Module,
    train_dataset: Dataset,
    test_dataset: Dataset,
    indices: torch.Tensor | Sequence[int],
    num_classes: int,
    epochs: int = 60,
    lr: float | None = None,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_augment: Callable[[torch.Tensor], torch.Tensor] | None = random_crop_flip,
    weight_decay: float = 0.0,
    num_workers: int = 0,
    eval_batch_size: int = 256,
    autocast: bool = False,
    copy_encoder: bool = True,
    return_model: bool = False,
    head_layer: int = 0,
) -> dict:
    """Fine-tune an encoder (and the first blocks of its head) plus a new linear layer on a labelled subset.

    Args:
        encoder: the encoder f (``nn.Module`` (N, 3, H, W) -> (N, F)), or a model with ``.encoder`` (its
            projection head is discarded, as in SimCLR); a freshly initialised one for the from-scratch control.
        train_dataset: data set yielding ``(image (3, H, W) float, int label)``; only ``indices`` are used. Give it
            the evaluation transform (no random augmentation): the batch augmentation is applied here.
        test_dataset: data set scored after training.
        indices: training indices into ``train_dataset``, e.g. from :func:`~contrastkit.evaluate.class_balanced_subset`.
        num_classes: C, output size of the new linear layer (>= 2).
        epochs, batch_size, eval_batch_size, num_workers: passes over the subset, the training and test batch
            sizes (each >= 1) and the ``DataLoader`` workers (>= 0).
        lr: peak learning rate; default ``0.05 * batch_size / 256``.
        seed: seed of the head initialisation, shuffling and augmentation.
        device: where training runs.
        batch_augment: callable applied to every training batch on ``device``,
            (B, 3, H, W) -> (B, 3, H, W); None for no augmentation.
        weight_decay: L2 coefficient (>= 0); 0 as in SimCLR.
        autocast: bf16 autocast on CUDA (ignored on CPU).
        copy_encoder: fine-tune a deep copy and leave ``encoder`` untouched.
        return_model: also return the :class:`~contrastkit.finetuned.FineTunedNetwork` under ``"model"``.
        head_layer: L, fine-tune from the first L Linear-BN-ReLU blocks of the model's MLP head (SimCLRv2
            Sec. 2.2: 1 of a 3-layer head; needs ``.encoder`` and a ProjectionHead ``.head``); 0: from h.

    Returns:
        ``{"top1", "top5", "n_train", "recipe"}`` (plus ``"model"`` with ``return_model``); accuracies in [0, 1],
        top-5 is top-min(5, C); ``recipe``: every setting used, ``n_test`` and ``steps``.

    Raises:
        TypeError: wrongly typed arguments. RuntimeError: a non-finite training loss (names the step).
        ValueError: empty or out-of-range indices, labels outside [0, num_classes), non-positive sizes or lr, an
            augmentation that changes the batch shape, an empty test set, or a head layer out of range.

    Shape:
        images (B, 3, H, W) -> logits (B, num_classes).
    """
    encoder, prefix = _parts(encoder, head_layer)
    idx = _check_indices(indices, len(train_dataset))  # type: ignore[arg-type]
    _check_seed_augment_test(seed, batch_augment, test_dataset)
    num_classes, epochs, batch_size, eval_batch_size, num_workers = _check_sizes(
        num_classes, epochs, batch_size, eval_batch_size, num_workers)
    lr = 0.05 * batch_size / 256 if lr is None else check_positive_float("lr", lr)
    weight_decay = check_positive_float("weight_decay", weight_decay, allow_zero=True)
    device = resolve_device(device)
    use_amp = bool(autocast) and device.type == "cuda"

    with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model, optimizer = _model_and_optimizer(encoder, prefix, train_dataset, num_classes, lr, weight_decay,
                                                device, copy_encoder)
        loader = _subset_loader(train_dataset, idx, batch_size, num_workers, seed)
        total_steps = _train(model, loader, optimizer, epochs, lr, num_classes, batch_augment, device, use_amp)

    scores = classifier_accuracy(model, test_dataset, num_classes, batch_size=eval_batch_size, device=device,
                                 num_workers=num_workers, autocast=autocast)  # top1, top5, n_test
    recipe = {"epochs": epochs, "lr": lr, "batch_size": batch_size, **_FIXED_RECIPE, "weight_decay": weight_decay,
              "augment": _augment_name(batch_augment), "seed": seed, "num_classes": num_classes,
              "n_train": int(idx.numel()), "n_test": scores["n_test"], "head_layer": head_layer, "steps": total_steps}
    result = {"top1": scores["top1"], "top5": scores["top5"], "n_train": recipe["n_train"], "recipe": recipe}
    return {**result, "model": model} if return_model else result
