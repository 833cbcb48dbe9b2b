"""Data augmentation module of SimCLR (Sec. 3): random views of an image, per image or per batch.

- :class:`SimCLRTransform`: one random view of one image (torchvision v2), for a Dataset.
- :class:`MultiViewTransform`: V views of one image (the positive pairs).
- :class:`BatchAugment`: V views of a whole batch at once, on its device (fast).
- :func:`eval_transform`: the deterministic resize / centre-crop / normalise for evaluation.
- :data:`PRESETS` (``"cifar"``, ``"imagenet"``) and :class:`AugmentConfig`: the shared settings.
- :class:`ResolutionSchedule` (:func:`parse_size_schedule`): the view side as training progresses.
- :func:`to_rgb`: any common PIL mode to RGB; :func:`save_preview`: an image grid of views (PNG, JPEG, WebP).
"""
from .batch import BatchAugment
from .config import (
    CIFAR10_MEAN_STD,
    IMAGENET_MEAN_STD,
    NORMALIZATIONS,
    PRESETS,
    AugmentConfig,
    blur_kernel_size,
    list_presets,
    preset_config,
    preset_for,
)
from .convert import SUPPORTED_PIL_MODES, to_rgb
from .preview import save_preview, unnormalize
from .resolution import ResolutionSchedule, parse_size_schedule
from .transforms import MultiViewTransform, RandomCutout, RandomRotate90, SimCLRTransform, eval_transform


def from_preset(name: str, **overrides) -> SimCLRTransform:
    """Per-image :class:`SimCLRTransform` of a preset (same as ``SimCLRTransform.from_preset``)."""
    return SimCLRTransform.from_preset(name, **overrides)


__all__ = [
    "AugmentConfig",
    "BatchAugment",
    "CIFAR10_MEAN_STD",
    "IMAGENET_MEAN_STD",
    "MultiViewTransform",
    "NORMALIZATIONS",
    "PRESETS",
    "RandomCutout",
    "RandomRotate90",
    "ResolutionSchedule",
    "SUPPORTED_PIL_MODES",
    "SimCLRTransform",
    "blur_kernel_size",
    "eval_transform",
    "from_preset",
    "list_presets",
    "parse_size_schedule",
    "preset_config",
    "preset_for",
    "save_preview",
    "to_rgb",
    "unnormalize",
]
