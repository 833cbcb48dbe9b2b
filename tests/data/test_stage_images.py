"""stage_images: where the device path keeps its decoded images."""
from __future__ import annotations

import pytest
import torch

from contrastkit.data import stage_images


def test_cpu_training_keeps_the_array_as_it_is():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    assert stage_images(images, torch.device("cpu")) is images


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_holds_a_small_array_and_pins_a_large_one():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    dev = torch.device("cuda")
    on_gpu = stage_images(images, dev)
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), images)
    pinned = stage_images(images, dev, max_fraction=0.0)
    assert pinned.device.type == "cpu" and pinned.is_pinned() and torch.equal(pinned, images)
    assert stage_images(images, dev, max_fraction=0.0, max_pinned_bytes=0) is images
