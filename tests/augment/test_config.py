"""Presets and argument validation shared by SimCLRTransform and BatchAugment."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from contrastkit.augment import (
    CIFAR10_MEAN_STD,
    IMAGENET_MEAN_STD,
    PRESETS,
    AugmentConfig,
    BatchAugment,
    SimCLRTransform,
    blur_kernel_size,
    from_preset,
    list_presets,
    preset_config,
)


def test_presets_follow_simclr():
    cifar, imagenet = preset_config("cifar"), preset_config("imagenet")
    assert (cifar.size, cifar.blur, cifar.color_strength, cifar.normalize) == (32, False, 0.5, CIFAR10_MEAN_STD)
    assert (imagenet.size, imagenet.blur, imagenet.blur_p, imagenet.color_strength) == (224, True, 0.5, 1.0)
    assert imagenet.normalize == IMAGENET_MEAN_STD
    for cfg in (cifar, imagenet):
        assert cfg.crop and cfg.flip and cfg.color and cfg.grayscale
        assert (cfg.color_p, cfg.grayscale_p, cfg.crop_scale) == (0.8, 0.2, (0.08, 1.0))
    assert imagenet.jitter == (0.8, 0.8, 0.8, 0.2)
    assert cifar.jitter == pytest.approx((0.4, 0.4, 0.4, 0.1))
    assert list_presets() == ["cifar", "imagenet"] and set(PRESETS) == {"cifar", "imagenet"}


def test_preset_dicts_are_constructor_arguments():
    for name, kwargs in PRESETS.items():
        assert AugmentConfig(**kwargs) == preset_config(name)


def test_overrides_and_from_preset_entry_points():
    t = SimCLRTransform.from_preset("cifar", blur=True, crop_scale=(0.2, 1.0), size=40)
    assert t.config.blur and t.config.crop_scale == (0.2, 1.0) and t.size == 40
    assert from_preset("imagenet").size == 224
    b = BatchAugment.from_preset("cifar", n_views=3, color_strength=1.0)
    assert b.n_views == 3 and b.config.color_strength == 1.0 and b.config.normalize == CIFAR10_MEAN_STD
    assert PRESETS["cifar"]["color_strength"] == 0.5  # overrides do not leak into the preset


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown augmentation preset 'cifar10'.*\['cifar', 'imagenet'\]"):
        SimCLRTransform.from_preset("cifar10")
    with pytest.raises(ValueError, match="known presets"):
        BatchAugment.from_preset("imgnet")
    with pytest.raises(TypeError, match="unknown augmentation argument.*'colour'"):
        preset_config("cifar", colour=False)


def test_blur_kernel_is_odd_ten_percent():
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(96) == 9
    assert blur_kernel_size(32) == 3
    assert all(blur_kernel_size(s) % 2 == 1 for s in range(1, 300))


def test_normalize_forms():
    assert AugmentConfig(32, normalize="cifar10").normalize == CIFAR10_MEAN_STD
    assert AugmentConfig(32, normalize=([0.5] * 3, [0.25] * 3)).normalize == ((0.5,) * 3, (0.25,) * 3)
    assert AugmentConfig(32).normalize is None


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(size=0), ValueError, "size must be >= 1 pixel, got 0"),
        (dict(size=1), ValueError, "blur needs size >= 2"),
        (dict(size="32"), TypeError, "size must be an int, got str"),
        (dict(size=True), TypeError, "size must be an int"),
        (dict(size=32, crop_scale=(0.5, 0.2)), ValueError, r"crop_scale must satisfy 0 < min <= max <= 1, got \(0.5, 0.2\)"),
        (dict(size=32, crop_scale=(0.0, 1.0)), ValueError, "crop_scale"),
        (dict(size=32, crop_scale=0.5), TypeError, "crop_scale must be a"),
        (dict(size=32, color_strength=3.0), ValueError, r"color_strength must be in \[0, 2.5\].*got 3.0"),
        (dict(size=32, color_strength=-0.1), ValueError, "color_strength"),
        (dict(size=32, blur_p=1.5), ValueError, r"blur_p must be a probability in \[0, 1\], got 1.5"),
        (dict(size=32, solarize=-0.2), ValueError, "solarize"),
        (dict(size=32, rotate="often"), TypeError, "rotate must be a probability"),
        (dict(size=32, flip="yes"), TypeError, "flip must be a bool"),
        (dict(size=32, grayscale=1), TypeError, "grayscale must be a bool"),
        (dict(size=32, normalize="cifar"), ValueError, "unknown normalize name 'cifar'"),
        (dict(size=32, normalize=((0.5, 0.5), (0.2, 0.2))), ValueError, "normalize mean must be a sequence of 3"),
        (dict(size=32, normalize=((0.5,) * 3, (0.2, 0.0, 0.2))), ValueError, "std must be > 0"),
        (dict(size=32, normalize=0.5), TypeError, "normalize must be None"),
    ],
)
def test_validation_messages(kwargs, error, message):
    with pytest.raises(error, match=message):
        AugmentConfig(**kwargs)
    with pytest.raises(error, match=message):
        SimCLRTransform(**kwargs)
    with pytest.raises(error, match=message):
        BatchAugment(**kwargs)


def test_bool_probabilities_mean_always_or_never():
    cfg = AugmentConfig(32, rotate=True, cutout=False)
    assert cfg.rotate == 1.0 and cfg.cutout == 0.0


def test_batch_augment_specific_validation():
    with pytest.raises(ValueError, match="n_views must be an int >= 1, got 0"):
        BatchAugment(32, n_views=0)
    with pytest.raises(TypeError, match="needs size"):
        BatchAugment()
    with pytest.raises(TypeError, match="needs size"):
        SimCLRTransform()


@pytest.mark.parametrize("cls", [SimCLRTransform, BatchAugment])
def test_constructors_spell_out_the_config_fields(cls):
    """The constructors take AugmentConfig's fields, in order and with its defaults (size=None), then build it."""
    fields = dataclasses.fields(AugmentConfig)
    params = list(inspect.signature(cls).parameters.values())[: len(fields)]
    assert [p.name for p in params] == [f.name for f in fields]
    assert [p.default for p in params] == [None] + [f.default for f in fields[1:]]
    assert cls(16, False, (0.5, 1.0), normalize="cifar10").config == AugmentConfig(
        16, crop=False, crop_scale=(0.5, 1.0), normalize="cifar10"
    )
    ready = AugmentConfig(8, blur=False)
    assert cls(config=ready).config is ready
