"""The resolution schedule (issue 27): parsing, the view side by progress, and BatchAugment at a chosen size."""
from __future__ import annotations

import pytest
import torch

from contrastkit.augment import BatchAugment, ResolutionSchedule, parse_size_schedule

def test_parse_and_size_at_the_boundaries():
    sched = parse_size_schedule(" 16:0.5, 24:0.8 ", 32)
    assert sched == ResolutionSchedule(((16, 0.5), (24, 0.8)), 32)
    assert [sched.size_at(p) for p in (0.0, 0.4999, 0.5, 0.7999, 0.8, 1.0, 1.5)] == [16, 16, 24, 24, 32, 32, 32]
    assert str(sched) == "16:0.5,24:0.8"
    assert parse_size_schedule("", 32) is None and parse_size_schedule("  ", 32) is None


def test_a_last_part_at_one_keeps_its_size_to_the_end():
    sched = parse_size_schedule("16:0.5,24:1", 32)
    assert sched == ResolutionSchedule(((16, 0.5), (24, 1.0)), 32)
    assert [sched.size_at(p) for p in (0.0, 0.4999, 0.5, 0.999, 1.0, 1.5)] == [16, 16, 24, 24, 24, 24]
    assert str(sched) == "16:0.5,24:1"
    assert parse_size_schedule("24:1", 32).size_at(1.0) == 24


@pytest.mark.parametrize("text, match", [
    ("16", "each part must be SIZE:UNTIL"),
    ("16:1.5", "each part must be SIZE:UNTIL"),
    ("16:1,24:1", "only the last part may reach 1 .*, got '24:1' after 16:1"),
    ("16:0", "each part must be SIZE:UNTIL"),
    ("2:0.5", "each part must be SIZE:UNTIL"),
    ("a:0.5", "got 'a:0.5'"),
    ("16:0.5,24:0.5", "the fractions must increase, got 0.5 after 0.5"),
    ("16:0.6,24:0.3", "the fractions must increase"),
])
def test_bad_schedules_name_the_part(text, match):
    with pytest.raises(ValueError, match=match):
        parse_size_schedule(text, 32)


def test_bad_final_size():
    with pytest.raises(ValueError, match="final view size must be an int >= 4"):
        parse_size_schedule("16:0.5", 0)


def test_batch_augment_at_a_chosen_size(images32):
    aug = BatchAugment.from_preset("cifar", n_views=2, cutout=0.5, rotate=0.5)
    g16, g32 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    small = aug(images32[:10], generator=g16, size=16)
    full = aug(images32[:10], generator=g32)
    assert [v.shape for v in small] == [(10, 3, 16, 16)] * 2 and [v.shape for v in full] == [(10, 3, 32, 32)] * 2
    assert all(torch.isfinite(v).all() for v in small)
    # the same number of draws at every size: the generators stay in step
    assert torch.equal(torch.rand(4, generator=g16), torch.rand(4, generator=g32))
    # the same crop of the same image: the 16-px view is the 32-px view seen at half the resolution
    plain = BatchAugment.from_preset("cifar", n_views=1, color=False, grayscale=False, normalize=None)
    a = plain(images32[:10], generator=torch.Generator().manual_seed(5), size=16)[0]
    b = plain(images32[:10], generator=torch.Generator().manual_seed(5), size=32)[0]
    pooled = torch.nn.functional.avg_pool2d(b, 2)
    other = torch.nn.functional.avg_pool2d(plain(images32[:10], generator=torch.Generator().manual_seed(6))[0], 2)
    assert (a - pooled).abs().mean() < 0.5 * (a - other).abs().mean()


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "16"])
def test_batch_augment_refuses_a_bad_size(images32, size):
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        BatchAugment.from_preset("cifar")(images32[:2], size=size)
