"""Pretraining with arbitrary augmentation overrides (the augmentation grid needs them).

:class:`~contrastkit.config.PretrainConfig` names some augmentation options (``crop_scale``, ``color_strength``,
``blur``) and takes any other op of :class:`~contrastkit.augment.AugmentConfig` (``crop``, ``flip``, ``color``,
``grayscale``, ``rotate``, ``cutout``, ``solarize``...) in its ``augment`` dict. :func:`pretrain_with_augment`
sets that dict on a copy of the config, so the run's ``config.yaml`` and checkpoint record the overrides.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..augment import preset_config
from ..config import PretrainConfig
from ..train import pretrain

__all__ = ["pretrain_with_augment", "check_augment_overrides"]


def check_augment_overrides(overrides: dict[str, Any], preset: str = "cifar") -> None:
    """Validate overrides against :class:`~contrastkit.augment.AugmentConfig` before any training.

    Raises:
        TypeError: an unknown argument name or a value of the wrong type.
        ValueError: a value out of range.
    """
    preset_config(preset, **overrides)


def pretrain_with_augment(cfg: PretrainConfig, augment: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run :func:`contrastkit.train.pretrain` with augmentation overrides on top of the preset's.

    Args:
        cfg: the run's config.
        augment: :class:`~contrastkit.augment.AugmentConfig` arguments, e.g.
            ``{"color": False, "rotate": 0.5}``, added to ``cfg.augment``; empty or None: the config as it is.

    Returns:
        pretrain's summary dict.

    Raises:
        TypeError, ValueError: bad overrides (before training), or whatever pretrain raises.
    """
    augment = dict(augment or {})
    if augment:
        check_augment_overrides(augment)
    return pretrain(dataclasses.replace(cfg, augment={**cfg.augment, **augment}))
