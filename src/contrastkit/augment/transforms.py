"""Per-image SimCLR view transform (torchvision.transforms.v2), multi-view wrapper and evaluation transform.

SimCLR's augmentation module (Sec. 3, App. A) turns one image into a random
view: random resized crop, horizontal flip, colour distortion (jitter with p 0.8,
grayscale with p 0.2), Gaussian blur. :class:`SimCLRTransform` builds that
pipeline from an :class:`~contrastkit.augment.AugmentConfig`, with every op
switchable for the augmentation ablation (SimCLR Fig. 5), plus the extra ops of
SimCLR Fig. 4 (rotation, cutout) and solarize.

Randomness: every op draws from torch's global RNG, so ``torch.manual_seed(s)``
before a call fixes the view; inside a ``DataLoader`` each worker's RNG is seeded
from the loader's ``generator`` (``base_seed + worker_id``), so a seeded loader
gives reproducible views.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from .config import (
    BLUR_SIGMA,
    CROP_RATIO,
    CUTOUT_FRACTION,
    AugmentConfig,
    _config_from_args,
    preset_config,
    resolve_normalize,
)
from .convert import check_image_tensor, to_rgb

__all__ = ["SimCLRTransform", "MultiViewTransform", "eval_transform", "RandomRotate90", "RandomCutout", "ImageTransform"]


def _prepare_input(img: Any) -> Any:
    """PIL -> RGB PIL (see :func:`to_rgb`); uint8 tensor (C, H, W) -> (3, H, W) plain tensor."""
    if isinstance(img, Image.Image):
        return to_rgb(img)
    return check_image_tensor(img).as_subclass(torch.Tensor)


class RandomRotate90(nn.Module):
    """With probability ``p``, rotates by 90, 180 or 270 degrees counter-clockwise, chosen uniformly (SimCLR Fig. 4).

    Works on PIL images and on tensors ``(..., H, W)`` (as ``torch.rot90(img, k, dims=(-2, -1))``).

    Args:
        p: probability of rotating.
    """

    def __init__(self, p: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, img: Any) -> Any:
        if torch.rand(1).item() >= self.p:
            return img
        k = int(torch.randint(1, 4, (1,)).item())
        if isinstance(img, Image.Image):
            return img.transpose(
                (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[k - 1]
            )
        return torch.rot90(img, k, dims=(-2, -1))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RandomCutout(nn.Module):
    """With probability ``p``, sets one square of a float tensor image to 0 (DeVries & Taylor 2017; SimCLR Fig. 4).

    The square has side ``round(fraction * min(H, W))``; its centre is uniform over
    the pixels and it is clipped at the borders.

    Args:
        p: probability of erasing.
        fraction: side of the square relative to the image side.

    Shape:
        input (C, H, W) float tensor, output the same (a new tensor).
    """

    def __init__(self, p: float = 1.0, fraction: float = CUTOUT_FRACTION) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.p = p
        self.fraction = fraction

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"RandomCutout expects a tensor (C, H, W), got {type(img).__name__}")
        if torch.rand(1).item() >= self.p:
            return img
        H, W = img.shape[-2:]
        side = max(1, round(self.fraction * min(H, W)))
        cy = int(torch.randint(0, H, (1,)).item())
        cx = int(torch.randint(0, W, (1,)).item())
        y0, x0 = cy - side // 2, cx - side // 2
        out = img.clone()
        out[..., max(y0, 0) : max(y0 + side, 0), max(x0, 0) : max(x0 + side, 0)] = 0
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}, fraction={self.fraction}"


class ImageTransform(nn.Module):
    """A v2 pipeline that accepts PIL images (any mode :func:`to_rgb` knows) and uint8 tensors, and returns a plain float tensor.

    Attributes:
        pipeline: the ``torchvision.transforms.v2.Compose`` that does the work.
        normalize: ``(mean, std)`` applied last, or None (read by
            :func:`~contrastkit.augment.save_preview` to un-normalise).

    Shape:
        input PIL image or uint8 (C, H, W), C in {1, 3}; output float32 (3, S, S).
    """

    def __init__(self, pipeline: v2.Compose, normalize: tuple[tuple[float, ...], tuple[float, ...]] | None) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.normalize = normalize

    def forward(self, img: Any) -> torch.Tensor:
        out = self.pipeline(_prepare_input(img))
        return out.as_subclass(torch.Tensor)


def _tail(normalize: tuple[tuple[float, ...], tuple[float, ...]] | None, cutout: float = 0.0) -> list[Callable]:
    ops: list[Callable] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if cutout > 0:
        ops.append(RandomCutout(cutout))
    if normalize is not None:
        ops.append(v2.Normalize(mean=list(normalize[0]), std=list(normalize[1])))
    return ops


class SimCLRTransform(ImageTransform):
    """One random SimCLR view of an image (SimCLR Sec. 3, App. A), built on torchvision.transforms.v2.

    Ops, in order, each switchable: random resized crop (``crop``; else a resize
    to ``(size, size)``) -> horizontal flip (``flip``) -> rotation by 90/180/270
    (``rotate``) -> colour jitter with p ``color_p`` (``color``) -> grayscale with
    p ``grayscale_p`` (``grayscale``) -> Gaussian blur with p ``blur_p`` (``blur``)
    -> solarize (``solarize``) -> to float in [0, 1] -> cutout (``cutout``) ->
    normalize (``normalize``). PIL inputs are processed by PIL (the fastest
    path), uint8 tensors by torch.

    Seeding: all randomness comes from torch's global RNG; ``torch.manual_seed(s)``
    before a call gives the same view every time (see the module docstring for
    DataLoader workers).

    Args:
        size: output side S.
        crop, crop_scale, flip, color, color_strength, color_p, grayscale,
            grayscale_p, blur, blur_p, rotate, cutout, solarize, normalize: see
            :class:`~contrastkit.augment.AugmentConfig`.
        config: a ready :class:`AugmentConfig` instead of the keyword arguments.

    Raises:
        TypeError, ValueError: invalid arguments (see :class:`AugmentConfig`); at
            call time, an input that is neither a PIL image nor a uint8 ``(C, H, W)``
            tensor with C in {1, 3}.

    Shape:
        input PIL image or uint8 (C, H, W); output float32 (3, S, S).

    Example:
        >>> t = SimCLRTransform.from_preset("cifar")
        >>> view = t(pil_image)  # (3, 32, 32), CIFAR-10-normalised
    """

    def __init__(
        self,
        size: int | None = None,
        crop: bool = True,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        flip: bool = True,
        color: bool = True,
        color_strength: float = 1.0,
        color_p: float = 0.8,
        grayscale: bool = True,
        grayscale_p: float = 0.2,
        blur: bool = True,
        blur_p: float = 0.5,
        rotate: float = 0.0,
        cutout: float = 0.0,
        solarize: float = 0.0,
        normalize: Any = None,
        *,
        config: AugmentConfig | None = None,
    ) -> None:
        config = _config_from_args("SimCLRTransform", config, locals())
        super().__init__(v2.Compose(self._build(config)), config.normalize)
        self.config = config

    @staticmethod
    def _build(cfg: AugmentConfig) -> list[Callable]:
        S = cfg.size
        ops: list[Callable] = []
        if cfg.crop:
            ops.append(v2.RandomResizedCrop(S, scale=cfg.crop_scale, ratio=CROP_RATIO, antialias=True))
        else:
            ops.append(v2.Resize((S, S), antialias=True))
        if cfg.flip:
            ops.append(v2.RandomHorizontalFlip(p=0.5))
        if cfg.rotate > 0:
            ops.append(RandomRotate90(cfg.rotate))
        if cfg.color and cfg.color_strength > 0 and cfg.color_p > 0:
            b, c, s, h = cfg.jitter
            ops.append(v2.RandomApply([v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h)], p=cfg.color_p))
        if cfg.grayscale and cfg.grayscale_p > 0:
            ops.append(v2.RandomGrayscale(p=cfg.grayscale_p))
        if cfg.blur and cfg.blur_p > 0:
            ops.append(v2.RandomApply([v2.GaussianBlur(cfg.blur_kernel, sigma=BLUR_SIGMA)], p=cfg.blur_p))
        if cfg.solarize > 0:
            ops.append(v2.RandomSolarize(threshold=128, p=cfg.solarize))  # PIL / uint8 stage: 128 of 255
        return ops + _tail(cfg.normalize, cfg.cutout)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "SimCLRTransform":
        """Builds from a preset of :data:`~contrastkit.augment.PRESETS` with some arguments overridden.

        Args:
            name: ``"cifar"`` or ``"imagenet"``.
            **overrides: any constructor argument, e.g. ``blur=True``.

        Raises:
            ValueError: unknown preset (the message lists the known ones).
        """
        return cls(config=preset_config(name, **overrides))

    @property
    def size(self) -> int:
        """Output side S."""
        return self.config.size

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.as_dict().items())


def eval_transform(size: int, normalize: Any = None, crop_fraction: float = 1.0) -> ImageTransform:
    """Deterministic evaluation transform: resize, centre-crop, to float, normalise.

    The shorter side is resized to ``round(size / crop_fraction)`` and the centre
    ``size x size`` square is kept (``crop_fraction=0.875`` gives ImageNet's
    resize-256 / crop-224; the default 1.0 keeps the whole shorter side).

    Args:
        size: output side S.
        normalize: None, a name (``"cifar10"``, ``"imagenet"``) or a ``(mean, std)`` pair.
        crop_fraction: fraction of the resized shorter side kept, in (0, 1].

    Returns:
        A callable accepting PIL images and uint8 ``(C, H, W)`` tensors.

    Raises:
        ValueError: non-positive size, crop_fraction outside (0, 1], bad normalize.

    Shape:
        output float32 (3, S, S).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    norm = resolve_normalize(normalize)
    resize = max(size, round(size / crop_fraction))
    ops: list[Callable] = [v2.Resize(resize, antialias=True), v2.CenterCrop(size)]
    return ImageTransform(v2.Compose(ops + _tail(norm)), norm)


class MultiViewTransform(nn.Module):
    """Applies a view transform V times (or V different transforms) to one image: the positive views of SimCLR/SupCon.

    Args:
        transform: one callable (used ``n_views`` times) or a list of callables
            (one per view; then ``n_views`` is their number).
        n_views: V >= 2; with a list, None or equal to its length.

    Returns (when called):
        A list of V tensors.

    Raises:
        TypeError: a transform is not callable.
        ValueError: V < 2, or n_views disagrees with the list length.

    Shape:
        input one image; output V x (3, S, S).
    """

    def __init__(self, transform: Callable | Sequence[Callable], n_views: int | None = None) -> None:
        super().__init__()
        if isinstance(transform, Sequence) and not isinstance(transform, (str, bytes)):
            transforms = list(transform)
            if n_views is not None and n_views != len(transforms):
                raise ValueError(f"n_views={n_views} but {len(transforms)} transforms were given; pass one or the other")
        else:
            n = 2 if n_views is None else n_views
            if isinstance(n, bool) or not isinstance(n, int):
                raise TypeError(f"n_views must be an int, got {n!r}")
            transforms = [transform] * max(n, 0)
        for t in transforms:
            if not callable(t):
                raise TypeError(f"every transform must be callable, got {type(t).__name__}")
        if len(transforms) < 2:
            raise ValueError(f"a multi-view transform needs V >= 2 views, got {len(transforms)}")
        self.transforms = transforms
        self._transform_modules = nn.ModuleList(t for t in dict.fromkeys(transforms) if isinstance(t, nn.Module))

    @property
    def n_views(self) -> int:
        """Number of views V."""
        return len(self.transforms)

    def forward(self, img: Any) -> list[torch.Tensor]:
        return [t(img) for t in self.transforms]
