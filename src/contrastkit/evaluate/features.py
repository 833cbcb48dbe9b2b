"""Feature extraction: run a frozen encoder over a data set once.

Every frozen-feature protocol (kNN, linear evaluation, retrieval, embedding
export) starts here. The module is put in eval mode (BatchNorm uses its running
statistics), gradients are off, and the module's previous train/eval state is
restored afterwards, submodule by submodule.

What is returned:

* given an encoder f (any ``nn.Module`` mapping (N, 3, H, W) to (N, F)), its
  output h;
* given a model with ``.encoder`` and ``.head`` (``ContrastiveModel``), the
  representation h = f(x) (SimCLR Sec. 2.1: h, not z, is used downstream), or
  the projection z = g(h) with ``use_projection=True`` (for comparison: SimCLR
  Fig. 8 shows h is better than z for linear evaluation).

Features come back as float32 CPU tensors whatever the device; on CUDA the
forward pass may run under bf16 autocast (``autocast=True``). Given a data set
(not a ready loader), extraction does not draw from the global torch RNG, so
running it as a per-epoch monitor leaves the training run unchanged.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._checks import check_positive_int, resolve_device

__all__ = ["extract_features"]


def _has_encoder_and_head(module: nn.Module) -> bool:
    return isinstance(getattr(module, "encoder", None), nn.Module) and isinstance(
        getattr(module, "head", None), nn.Module
    )


def _as_label_tensor(y: Any, batch_size: int) -> torch.Tensor:
    t = torch.as_tensor(y)
    if t.is_floating_point() or t.dim() != 1 or t.shape[0] != batch_size:
        raise ValueError(
            "the data set must yield (image, int label); the collated labels have "
            f"dtype {t.dtype} and shape {tuple(t.shape)}, expected integer shape ({batch_size},)"
        )
    return t.long()


def _loader(dataset: Dataset | DataLoader, batch_size: int, num_workers: int) -> DataLoader:
    """``dataset`` itself when it is a DataLoader, else an in-order loader over it."""
    if isinstance(dataset, DataLoader):
        return dataset
    batch_size = check_positive_int("batch_size", batch_size)
    num_workers = check_positive_int("num_workers", num_workers, minimum=0)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("dataset is empty: expected at least one (image, label) sample")
    # A private generator: iterating a DataLoader otherwise draws its worker base
    # seed from the global RNG, and a kNN monitor would change the training run.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )


def _encoder_and_head(model_or_encoder: nn.Module, use_projection: bool) -> tuple[nn.Module, nn.Module | None]:
    """The encoder f and, for a model that has one, the head g."""
    if _has_encoder_and_head(model_or_encoder):
        return model_or_encoder.encoder, model_or_encoder.head
    if use_projection:
        raise ValueError(
            f"use_projection=True needs a model with .encoder and .head, got a bare "
            f"{type(model_or_encoder).__name__}"
        )
    return model_or_encoder, None


def _image_batch(batch) -> tuple[torch.Tensor, object]:
    """``(images (B, C, H, W), labels)`` of a loader batch, or a TypeError / ValueError saying what it holds."""
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        raise TypeError(f"the data set must yield (image, label) pairs; got a batch of type {type(batch).__name__}")
    x, y = batch[0], batch[1]
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected an image batch of shape (B, C, H, W), got {shape}")
    return x, y


def _check_output(out, batch_size: int) -> None:
    """The encoder (and head) must give one feature vector per image: (B, F)."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != batch_size:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the encoder must map (B, 3, H, W) to (B, F); for B={batch_size} it returned {shape}")


@torch.no_grad()
def extract_features(
    model_or_encoder: nn.Module,
    dataset: Dataset | DataLoader,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    use_projection: bool = False,
    autocast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute the representation of every sample of a data set.

    The module is moved to ``device`` (in place, as ``nn.Module.to`` does) and
    left there. Samples are read in order (no shuffling), so row i belongs to
    ``dataset[i]``.

    Args:
        model_or_encoder: an encoder f, or a model with ``.encoder`` and ``.head``.
        dataset: a ``Dataset`` yielding ``(image (3, H, W) float, int label)``, or a
            ready ``DataLoader`` over such a data set (then ``batch_size`` and
            ``num_workers`` are ignored; it should not shuffle).
        batch_size: images per forward pass.
        device: where the forward pass runs (``"cpu"``, ``"cuda"``, ...).
        num_workers: ``DataLoader`` worker processes.
        use_projection: return z = g(f(x)) instead of h (needs ``.head``).
        autocast: run the forward pass under bf16 autocast when ``device`` is CUDA
            (ignored on CPU). Features are returned in float32 either way.

    Returns:
        ``(features, labels)``: float32 CPU tensor and int64 CPU tensor.

    Raises:
        TypeError: if ``model_or_encoder`` is not an ``nn.Module`` or the data set
            does not yield (image, label) pairs.
        ValueError: if ``use_projection`` is set for a module without ``.head``,
            the data set is empty, the output is not (B, F), or the features
            contain NaN/inf.

    Shape:
        images (N, 3, H, W) -> features (N, F), labels (N,).
    """
    if not isinstance(model_or_encoder, nn.Module):
        raise TypeError(f"model_or_encoder must be an nn.Module, got {type(model_or_encoder).__name__}")
    device = resolve_device(device)
    loader = _loader(dataset, batch_size, num_workers)
    encoder, head = _encoder_and_head(model_or_encoder, use_projection)

    module = model_or_encoder
    previous_modes = [(m, m.training) for m in module.modules()]
    module.to(device)
    module.eval()
    use_amp = bool(autocast) and device.type == "cuda"
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    try:
        for batch in loader:
            x, y = _image_batch(batch)  # (B, C, H, W), labels
            x = x.to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                out = encoder(x)  # (B, F)
                if use_projection:
                    assert head is not None
                    out = head(out)  # (B, D)
            _check_output(out, x.shape[0])
            feats.append(out.float().cpu())
            labels.append(_as_label_tensor(y, x.shape[0]))
    finally:
        for m, mode in previous_modes:
            m.training = mode
    if not feats:
        raise ValueError("the data loader yielded no batches: expected at least one sample")
    features = torch.cat(feats)  # (N, F)
    if not bool(torch.isfinite(features).all()):
        bad = int((~torch.isfinite(features)).any(dim=1).sum())
        raise ValueError(f"the encoder produced non-finite features (NaN or inf) for {bad} of {features.shape[0]} samples")
    return features, torch.cat(labels)
