"""Linear evaluation on frozen features (the papers' linear protocol).

SimCLR and SupCon measure a representation by training a linear classifier on
top of the frozen encoder. Here the features are computed once
(:func:`~contrastkit.evaluate.extract_features`) and the classifier is trained
on the stored features, which makes the fit cheap (each step is a small matmul). As in SimCLR's transfer
experiments, no data augmentation is used during the linear fit.

Recipe (defaults in brackets):

* **Standardisation.** Each feature dimension is centred and scaled with the
  mean and standard deviation of the *training* features (dimensions with zero
  variance are only centred); the same statistics are applied to the test
  features. It makes one learning rate suit encoders whose features have very
  different scales. Turn off with ``standardize=False``.
* **Classifier.** One ``nn.Linear(F, C)`` initialised to zero (the problem is
  convex, so the initialisation only affects the path, and zeros make it
  deterministic), trained with cross-entropy.
* **Optimiser.** SGD with Nesterov momentum 0.9 on mini-batches [256] drawn
  from a seeded permutation each epoch, for [100] epochs, with the learning
  rate [0.1 x batch_size / 256, SimCLR's linear-evaluation scaling rule]
  decayed to zero with a per-step cosine schedule and no warm-up.
* **L2 regularisation.** Weight decay on the weight matrix only (not the bias),
  [0] by default. Pass a sequence (for example :data:`WEIGHT_DECAY_GRID`) to
  select it on a held-out, class-balanced [10%] split of the training set,
  following the l2-regularised logistic-regression protocol SimCLR uses for
  transfer: each value is fitted on the remaining 90% and scored on the held-out
  part, the value with the best held-out top-1 is kept (the first in the given
  order on ties), and the classifier is refitted on the whole training set.
  The test set is never used for selection.
* **Reproducibility.** Shuffling uses a ``torch.Generator`` seeded with
  ``seed`` and the initialisation is zero, so the same inputs and seed give the
  identical number on the same device; the global RNG is not touched.

Accuracies are fractions in [0, 1]; the returned ``recipe`` records every
choice, ready to be written next to the number.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import (
    as_train_test,
    check_positive_float,
    check_positive_int,
    infer_num_classes,
    resolve_device,
)
from ..data.subsets import class_balanced_subset

__all__ = ["linear_eval", "WEIGHT_DECAY_GRID", "standardize_features"]

#: A small L2 grid for ``linear_eval(weight_decay=WEIGHT_DECAY_GRID)``.
WEIGHT_DECAY_GRID: tuple[float, ...] = (0.0, 1e-6, 1e-5, 1e-4, 1e-3)


def standardize_features(
    train: torch.Tensor, *others: torch.Tensor, eps: float = 1e-8
) -> tuple[torch.Tensor, ...]:
    """Centre and scale features with the statistics of ``train``.

    Args:
        train: features whose per-dimension mean and (population) standard
            deviation are used.
        *others: further feature sets transformed with the same statistics.
        eps: standard deviations below this are treated as 1 (the dimension is
            only centred).

    Returns:
        ``(train_std, *others_std)``.

    Shape:
        train (N, F), others (M_i, F) -> same shapes.
    """
    mean = train.mean(dim=0, keepdim=True)  # (1, F)
    std = train.std(dim=0, unbiased=False, keepdim=True)  # (1, F)
    std = torch.where(std < eps, torch.ones_like(std), std)
    return tuple((x - mean) / std for x in (train, *others))


def _train_linear(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
) -> nn.Linear:
    """Fit a zero-initialised linear classifier with Nesterov SGD + cosine decay.

    Shape:
        x (N, F), y (N,) -> Linear(F, num_classes).
    """
    n, dim = x.shape
    # skip_init: no draw from the global RNG, the weights are zeroed right after.
    layer = torch.nn.utils.skip_init(nn.Linear, dim, num_classes, device=x.device)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    optimizer = torch.optim.SGD(
        [
            {"params": [layer.weight], "weight_decay": weight_decay},
            {"params": [layer.bias], "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=0.9,
        nesterov=True,
    )
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, n)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).to(x.device)  # (N,)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]  # (B,)
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / total_steps))
            logits = layer(x[idx])  # (B, C)
            loss = F.cross_entropy(logits, y[idx])
            if not math.isfinite(loss.item()):
                raise RuntimeError(
                    f"linear evaluation diverged: loss is {loss.item()} at step {step} of {total_steps} "
                    f"(lr={lr}, weight_decay={weight_decay}); try a smaller lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return layer


@torch.no_grad()
def _topk_accuracy(layer: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192
                   ) -> tuple[float, float | None]:
    """Top-1 and top-5 accuracy of a classifier on features (top-5 None with 5 classes or fewer: always 1 there).

    Shape:
        x (N, F), y (N,).
    """
    hits1 = hits5 = 0
    for start in range(0, x.shape[0], chunk):
        logits = layer(x[start : start + chunk])  # (B, C)
        target = y[start : start + chunk]  # (B,)
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
        hits1 += int((ranked[:, 0] == target).sum())
        hits5 += int((ranked == target[:, None]).any(dim=1).sum())
    return hits1 / x.shape[0], (hits5 / x.shape[0] if logits.shape[1] > 5 else None)


def _fit_and_score(
    x_fit: torch.Tensor,
    y_fit: torch.Tensor,
    x_eval: torch.Tensor,
    y_eval: torch.Tensor,
    num_classes: int,
    standardize: bool,
    **train_kwargs,
) -> tuple[float, float]:
    if standardize:
        x_fit, x_eval = standardize_features(x_fit, x_eval)
    layer = _train_linear(x_fit, y_fit, num_classes, **train_kwargs)
    return _topk_accuracy(layer, x_eval, y_eval)


def _weight_decay_grid(weight_decay: float | Sequence[float]) -> list[float]:
    """The weight-decay candidates: ``[weight_decay]`` for a number, the checked sequence otherwise."""
    if isinstance(weight_decay, (int, float)) and not isinstance(weight_decay, bool):
        return [check_positive_float("weight_decay", weight_decay, allow_zero=True)]
    if isinstance(weight_decay, Sequence) and not isinstance(weight_decay, str) and len(weight_decay) > 0:
        return [check_positive_float("weight_decay candidate", w, allow_zero=True) for w in weight_decay]
    raise TypeError(f"weight_decay must be a number >= 0 or a non-empty sequence of them, got {weight_decay!r}")


def _select_weight_decay(x_train: torch.Tensor, y_train: torch.Tensor, grid: list[float], val_fraction,
                         num_classes: int, standardize: bool, train_kwargs: dict) -> tuple[float, list[dict]]:
    """The candidate with the best top-1 on a class-balanced held-out share of the training set, and every
    candidate's score."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    device = x_train.device
    val_idx = class_balanced_subset(y_train.cpu(), val_fraction, seed=train_kwargs["seed"]).to(device)
    is_val = torch.zeros(x_train.shape[0], dtype=torch.bool, device=device)
    is_val[val_idx] = True
    if bool(is_val.all()):
        raise ValueError(
            f"the held-out split (val_fraction={val_fraction}, at least one sample per class) takes all "
            f"{x_train.shape[0]} training samples; use more training data or a single weight_decay"
        )
    best, chosen, val_top1 = -1.0, grid[0], []
    for wd in grid:
        acc1, _ = _fit_and_score(x_train[~is_val], y_train[~is_val], x_train[is_val], y_train[is_val],
                                 num_classes, standardize, weight_decay=wd, **train_kwargs)
        val_top1.append({"weight_decay": wd, "val_top1": acc1})
        if acc1 > best:
            best, chosen = acc1, wd
    return chosen, val_top1


def linear_eval(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    epochs: int = 100,
    lr: float | None = None,
    weight_decay: float | Sequence[float] = 0.0,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
    standardize: bool = True,
    val_fraction: float = 0.1,
) -> dict:
    """Train a linear classifier on frozen training features and test it.

    Args:
        train_feats, train_labels: training features (from the frozen encoder) and their labels.
        test_feats, test_labels: test features and labels.
        epochs: passes over the training features (>= 1).
        lr: peak learning rate; default ``0.1 * batch_size / 256``.
        weight_decay: L2 coefficient (>= 0), or a sequence of candidates selected
            on a held-out split of the training set (see the module docstring).
        batch_size: mini-batch size (>= 1; clipped to the training-set size).
        seed: seed of the shuffling (and of the held-out split).
        device: where the classifier is trained.
        num_classes: C; default ``max label + 1`` over train and test.
        standardize: standardise features with the training statistics.
        val_fraction: share of each class held out for the weight-decay
            selection, in (0, 1); only used with a sequence of candidates.

    Returns:
        ``{"top1": float, "top5": float | None, "recipe": dict}``; accuracies in [0, 1], top-5 None with 5 classes
        or fewer (where every prediction would be a hit). ``recipe`` holds ``epochs``, ``lr``, ``batch_size``,
        ``optimizer``, ``momentum``, ``nesterov``, ``schedule``, ``weight_decay`` (the value used),
        ``weight_decay_grid`` and ``val_top1`` (per candidate, empty without a grid), ``val_fraction``,
        ``standardize``, ``init``, ``seed``, ``num_classes``, ``n_train``, ``n_test``, ``feature_dim``.

    Raises:
        TypeError: wrongly typed inputs. RuntimeError: a non-finite training loss (names the step).
        ValueError: mismatched shapes or dimensions, non-finite features, non-positive epochs/lr/batch_size,
            negative weight decay, labels outside [0, num_classes), or a held-out split that leaves no data.

    Shape:
        train_feats (N, F), train_labels (N,), test_feats (M, F), test_labels (M,).
    """
    x_train, y_train, x_test, y_test = as_train_test(train_feats, train_labels, test_feats, test_labels)
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    lr = 0.1 * batch_size / 256 if lr is None else check_positive_float("lr", lr)
    grid = _weight_decay_grid(weight_decay)
    use_grid = len(grid) > 1
    num_classes = infer_num_classes(num_classes, y_train, y_test, names=["train_labels", "test_labels"])
    device = resolve_device(device)
    x_train, y_train = x_train.to(device), y_train.to(device)
    x_test, y_test = x_test.to(device), y_test.to(device)
    train_kwargs = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}

    chosen, val_top1 = grid[0], []
    if use_grid:
        chosen, val_top1 = _select_weight_decay(x_train, y_train, grid, val_fraction, num_classes, standardize,
                                                train_kwargs)

    top1, top5 = _fit_and_score(
        x_train, y_train, x_test, y_test, num_classes, standardize, weight_decay=chosen, **train_kwargs
    )
    recipe = {"epochs": epochs, "lr": lr, "batch_size": min(batch_size, x_train.shape[0]), "optimizer": "sgd",
              "momentum": 0.9, "nesterov": True, "schedule": "cosine (per step, no warm-up)", "weight_decay": chosen,
              "weight_decay_grid": grid if use_grid else [], "val_top1": val_top1,
              "val_fraction": val_fraction if use_grid else 0.0, "standardize": bool(standardize), "init": "zeros",
              "seed": seed, "num_classes": num_classes, "n_train": int(x_train.shape[0]),
              "n_test": int(x_test.shape[0]), "feature_dim": int(x_train.shape[1])}
    return {"top1": top1, "top5": top5, "recipe": recipe}
