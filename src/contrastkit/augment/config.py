"""Augmentation settings shared by the per-image and the batched pipelines, and the presets.

One validated :class:`AugmentConfig` describes a SimCLR view distribution
(SimCLR Sec. 3 and App. A). :class:`~contrastkit.augment.SimCLRTransform` (per
image, torchvision v2) and :class:`~contrastkit.augment.BatchAugment` (a whole
batch on its device) are both built from it, so the same argument names and the
same presets drive both.

The argument names map 1:1 to command-line flags (``crop_scale`` <->
``--crop-scale``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

__all__ = [
    "AugmentConfig",
    "PRESETS",
    "preset_for",
    "NORMALIZATIONS",
    "CIFAR10_MEAN_STD",
    "IMAGENET_MEAN_STD",
    "CROP_RATIO",
    "BLUR_SIGMA",
    "CUTOUT_FRACTION",
    "SOLARIZE_THRESHOLD",
    "blur_kernel_size",
    "list_presets",
    "preset_config",
    "resolve_normalize",
]

#: CIFAR-10 training-set per-channel mean and std (computed on the 50,000 training images).
CIFAR10_MEAN_STD: tuple[tuple[float, float, float], tuple[float, float, float]] = (
    (0.4914, 0.4822, 0.4465),
    (0.2470, 0.2435, 0.2616),
)
#: ImageNet per-channel mean and std (the torchvision constants).
IMAGENET_MEAN_STD: tuple[tuple[float, float, float], tuple[float, float, float]] = (
    (0.485, 0.456, 0.406),
    (0.229, 0.224, 0.225),
)
#: Named normalisations accepted wherever ``normalize`` is.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": CIFAR10_MEAN_STD,
    "imagenet": IMAGENET_MEAN_STD,
}

#: Aspect-ratio range of the random resized crop (SimCLR App. A, torchvision default).
CROP_RATIO: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
#: Range of the Gaussian blur sigma, in pixels (SimCLR App. A).
BLUR_SIGMA: tuple[float, float] = (0.1, 2.0)
#: Side of the cutout square as a fraction of the image side (DeVries & Taylor 2017: 16 px on 32 px CIFAR).
CUTOUT_FRACTION: float = 0.5
#: Solarize inverts pixels >= this value (128 of 255, as PIL's ``ImageOps.solarize`` is usually called).
SOLARIZE_THRESHOLD: float = 128.0 / 255.0

#: Preset name -> keyword arguments of :class:`AugmentConfig` (read-only by convention; copy before editing).
PRESETS: dict[str, dict[str, Any]] = {
    # SimCLR App. B.9: CIFAR-10 uses crop, flip, colour distortion; no Gaussian blur.
    # Colour strength 0.5 is what SimCLR's CIFAR experiments use (App. B.9, Fig. B.7).
    "cifar": dict(
        size=32,
        crop=True,
        crop_scale=(0.08, 1.0),
        flip=True,
        color=True,
        color_strength=0.5,
        grayscale=True,
        blur=False,
        blur_p=0.5,
        rotate=0.0,
        cutout=0.0,
        solarize=0.0,
        normalize=CIFAR10_MEAN_STD,
    ),
    # SimCLR App. A: 224 px crops, colour strength 1.0, blur with p = 0.5 and a kernel of 10% of the side.
    "imagenet": dict(
        size=224,
        crop=True,
        crop_scale=(0.08, 1.0),
        flip=True,
        color=True,
        color_strength=1.0,
        grayscale=True,
        blur=True,
        blur_p=0.5,
        rotate=0.0,
        cutout=0.0,
        solarize=0.0,
        normalize=IMAGENET_MEAN_STD,
    ),
}


def preset_for(preset: str, image_size: int | None) -> str:
    """What ``--preset auto`` means for images of side ``image_size`` (None: of mixed sizes): ``cifar`` up to 64 px,
    else ``imagenet``; any other name is checked against the known presets.

    Raises:
        ValueError: an unknown preset name.
    """
    if preset == "auto":
        preset = "cifar" if image_size is not None and image_size <= 64 else "imagenet"
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; known presets: {', '.join(sorted(PRESETS))}")
    return preset


def list_presets() -> list[str]:
    """Returns the names of the known presets, sorted."""
    return sorted(PRESETS)


def blur_kernel_size(size: int) -> int:
    """Gaussian-blur kernel side: 10% of the image side, made odd, at least 3 (SimCLR App. A).

    Args:
        size: output image side in pixels.

    Returns:
        An odd kernel size (23 for 224, 3 for 32).
    """
    k = max(3, int(0.1 * size))
    return k if k % 2 == 1 else k + 1


def resolve_normalize(normalize: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Validates a ``normalize`` argument and returns ``(mean, std)`` as float tuples, or None.

    Args:
        normalize: None (no normalisation), a name from :data:`NORMALIZATIONS`
            (``"cifar10"``, ``"imagenet"``), or a pair ``(mean, std)`` of 3-sequences.

    Returns:
        ``((m_r, m_g, m_b), (s_r, s_g, s_b))`` or None.

    Raises:
        ValueError: unknown name, wrong lengths, non-finite values or a std that is not > 0.
        TypeError: anything else.
    """
    if normalize is None:
        return None
    if isinstance(normalize, str):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalize name {normalize!r}; known: {sorted(NORMALIZATIONS)}, or a (mean, std) pair")
        normalize = NORMALIZATIONS[normalize]
    if not isinstance(normalize, Sequence) or len(normalize) != 2:
        raise TypeError(f"normalize must be None, a name or a (mean, std) pair of 3-sequences, got {normalize!r}")
    mean, std = normalize
    out = []
    for name, values in (("mean", mean), ("std", std)):
        if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != 3:
            raise ValueError(f"normalize {name} must be a sequence of 3 numbers (R, G, B), got {values!r}")
        try:
            floats = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            raise TypeError(f"normalize {name} must hold numbers, got {values!r}") from None
        if not all(math.isfinite(v) for v in floats):
            raise ValueError(f"normalize {name} must be finite, got {floats}")
        out.append(floats)
    if not all(s > 0 for s in out[1]):
        raise ValueError(f"normalize std must be > 0 in every channel, got {out[1]}")
    return out[0], out[1]


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True/False), got {type(value).__name__} {value!r}")


def _check_prob(name: str, value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a probability (a number in [0, 1]), got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The settings of one SimCLR view distribution; every op can be switched off on its own.

    Defaults follow SimCLR's ImageNet augmentation (App. A) except ``normalize``
    (None). The ops run in this order: crop (or resize) -> flip -> rotate ->
    colour jitter -> grayscale -> blur -> solarize -> cutout -> normalize.

    Args:
        size: output side in pixels; every view is ``(3, size, size)``.
        crop: random resized crop with area fraction in ``crop_scale`` and aspect
            ratio log-uniform in (3/4, 4/3). When False the image is resized to
            ``(size, size)``.
        crop_scale: ``(min, max)`` area fraction of the crop, ``0 < min <= max <= 1``.
        flip: horizontal flip with p = 0.5.
        color: colour jitter (brightness, contrast, saturation ``0.8 * s``, hue
            ``0.2 * s``, in random order) applied with probability ``color_p``.
        color_strength: SimCLR's colour-distortion strength s, in [0, 2.5]
            (hue ``0.2 * s`` must stay <= 0.5).
        color_p: probability of the colour jitter (0.8, SimCLR App. A).
        grayscale: random grayscale with probability ``grayscale_p``.
        grayscale_p: probability of grayscale (0.2, SimCLR App. A).
        blur: Gaussian blur, sigma uniform in [0.1, 2.0] px, kernel 10% of the
            side (odd), applied with probability ``blur_p``.
        blur_p: probability of the blur (0.5, SimCLR App. A).
        rotate: probability of a rotation by 90, 180 or 270 degrees, chosen
            uniformly (SimCLR Fig. 4); 0 = off, True = 1.
        cutout: probability of erasing (to 0 before normalisation) one square of
            side ``CUTOUT_FRACTION * size`` centred uniformly in the image
            (clipped at the borders; SimCLR Fig. 4); 0 = off, True = 1.
        solarize: probability of solarizing (pixels >= 128/255 become 1 - x); 0 = off.
        normalize: None (no normalisation), a name (``"cifar10"``, ``"imagenet"``)
            or a ``(mean, std)`` pair of RGB 3-tuples.

    Raises:
        TypeError: a switch is not a bool, or a number is not a number.
        ValueError: a value is out of range.
    """

    size: int
    crop: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    color: bool = True
    color_strength: float = 1.0
    color_p: float = 0.8
    grayscale: bool = True
    grayscale_p: float = 0.2
    blur: bool = True
    blur_p: float = 0.5
    rotate: float = 0.0
    cutout: float = 0.0
    solarize: float = 0.0
    normalize: Any = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise TypeError(f"size must be an int, got {type(self.size).__name__} {self.size!r}")
        if self.size < 1:
            raise ValueError(f"size must be >= 1 pixel, got {self.size}")
        for name in ("crop", "flip", "color", "grayscale", "blur"):
            _check_bool(name, getattr(self, name))
        scale = self.crop_scale
        if not isinstance(scale, Sequence) or isinstance(scale, str) or len(scale) != 2:
            raise TypeError(f"crop_scale must be a (min, max) pair, got {scale!r}")
        lo, hi = float(scale[0]), float(scale[1])
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got ({lo}, {hi})")
        set_("crop_scale", (lo, hi))
        s = self.color_strength
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise TypeError(f"color_strength must be a number, got {s!r}")
        if not 0.0 <= s <= 2.5:
            raise ValueError(f"color_strength must be in [0, 2.5] (hue jitter 0.2*s <= 0.5), got {s}")
        set_("color_strength", float(s))
        for name in ("color_p", "grayscale_p", "blur_p", "rotate", "cutout", "solarize"):
            set_(name, _check_prob(name, getattr(self, name)))
        set_("normalize", resolve_normalize(self.normalize))
        if self.blur and self.blur_p > 0 and self.size < 2:
            raise ValueError(f"blur needs size >= 2 (reflect padding of the 3-tap kernel), got size {self.size}")

    @property
    def jitter(self) -> tuple[float, float, float, float]:
        """``(brightness, contrast, saturation, hue)`` jitter amounts: ``0.8 s, 0.8 s, 0.8 s, 0.2 s``."""
        s = self.color_strength
        return 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s

    @property
    def blur_kernel(self) -> int:
        """Odd blur kernel side for :attr:`size` (see :func:`blur_kernel_size`)."""
        return blur_kernel_size(self.size)

    def replace(self, **changes: Any) -> "AugmentConfig":
        """Returns a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (keyword arguments of the constructors)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def preset_config(name: str, **overrides: Any) -> AugmentConfig:
    """Builds the :class:`AugmentConfig` of a preset, with some arguments overridden.

    Args:
        name: a key of :data:`PRESETS` (``"cifar"``, ``"imagenet"``).
        **overrides: any :class:`AugmentConfig` argument, e.g. ``blur=True``.

    Returns:
        The validated config.

    Raises:
        ValueError: unknown preset (the message lists the known ones) or a bad value.
        TypeError: an unknown argument name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}; known presets: {list_presets()}")
    known = {f.name for f in dataclasses.fields(AugmentConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown augmentation argument(s) {unknown}; known: {sorted(known)}")
    kwargs = dict(PRESETS[name])
    kwargs.update(overrides)
    return AugmentConfig(**kwargs)


def _config_from(config: AugmentConfig | Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> AugmentConfig:
    """Builds a config from either a ready one or keyword arguments (not both)."""
    if config is not None:
        if kwargs:
            raise TypeError(f"pass either config= or keyword arguments, not both (got config and {sorted(kwargs)})")
        if isinstance(config, AugmentConfig):
            return config
        if isinstance(config, Mapping):
            return AugmentConfig(**config)
        raise TypeError(f"config must be an AugmentConfig or a mapping, got {type(config).__name__}")
    return AugmentConfig(**kwargs)


def _config_from_args(
    who: str, config: AugmentConfig | Mapping[str, Any] | None, args: Mapping[str, Any]
) -> AugmentConfig:
    """The config of a constructor that takes :class:`AugmentConfig`'s fields as arguments, or a ready ``config``.

    Shared by :class:`~contrastkit.augment.SimCLRTransform` and
    :class:`~contrastkit.augment.BatchAugment`, whose signatures repeat the fields
    (with ``size=None``).

    Args:
        who: the calling class, for the message.
        config: a ready config (or a mapping of its arguments); when given, the
            field arguments are not read.
        args: the constructor's arguments (its ``locals()``), holding every field.

    Raises:
        TypeError: neither ``size`` nor ``config`` given, or a bad ``config``.
        ValueError: a value out of range (see :class:`AugmentConfig`).
    """
    if config is not None:
        return _config_from(config, {})
    if args["size"] is None:
        raise TypeError(f"{who} needs size (or config=)")
    # tests/augment/test_config.py checks that both signatures spell out every field
    return AugmentConfig(**{f.name: args[f.name] for f in dataclasses.fields(AugmentConfig)})
