"""Pretraining with arbitrary augmentation overrides (the augmentation grid needs them).

:class:`~contrastkit.config.PretrainConfig` exposes some augmentation options
(``crop_scale``, ``color_strength``, ``blur``), not every op of
:class:`~contrastkit.augment.AugmentConfig` (``crop``, ``flip``, ``color``,
``grayscale``, ``rotate``, ``cutout``, ``solarize``...). :func:`pretrain_with_augment`
passes any of them:

* when ``PretrainConfig`` has an ``augment`` dict field, it is set on the
  config (the library then applies it as overrides of the preset, and the
  checkpoint records it);
* otherwise the trainer's preset resolution is wrapped for the duration of
  the call so that the overrides are added to the preset's. The run's
  ``config.yaml`` then does not show them; the experiment runner records them
  in the run's ``result.json``.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

from ..config import PretrainConfig

__all__ = ["pretrain_with_augment", "check_augment_overrides", "config_has_augment_field"]


def config_has_augment_field() -> bool:
    """Whether this version of PretrainConfig carries an ``augment`` dict of overrides."""
    return any(f.name == "augment" for f in dataclasses.fields(PretrainConfig))


def check_augment_overrides(overrides: dict[str, Any], preset: str = "cifar") -> None:
    """Validate overrides against :class:`~contrastkit.augment.AugmentConfig` before any training.

    Raises:
        TypeError: an unknown argument name or a value of the wrong type.
        ValueError: a value out of range.
    """
    from ..augment import preset_config

    preset_config(preset, **overrides)


@contextlib.contextmanager
def _wrapped_preset(overrides: dict[str, Any]) -> Iterator[None]:
    from ..train import trainer

    original = trainer.resolve_preset

    def resolve_with_overrides(cfg, splits):
        spec = original(cfg, splits)
        spec.overrides.update(overrides)
        return spec

    trainer.resolve_preset = resolve_with_overrides
    try:
        yield
    finally:
        trainer.resolve_preset = original


def pretrain_with_augment(cfg: PretrainConfig, augment: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run :func:`contrastkit.train.pretrain` with augmentation overrides on top of the preset's.

    Args:
        cfg: the run's config.
        augment: :class:`~contrastkit.augment.AugmentConfig` arguments, e.g.
            ``{"color": False, "rotate": 0.5}``; empty or None: the preset as configured.

    Returns:
        pretrain's summary dict.

    Raises:
        TypeError, ValueError: bad overrides (before training), or whatever pretrain raises.
    """
    from ..train import pretrain

    augment = dict(augment or {})
    if augment:
        check_augment_overrides(augment)
    if config_has_augment_field():
        return pretrain(dataclasses.replace(cfg, augment={**getattr(cfg, "augment", {}), **augment}))
    if not augment:
        return pretrain(cfg)
    with _wrapped_preset(augment):
        return pretrain(cfg)
