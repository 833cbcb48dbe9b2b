"""stage_images / batch_to_device: where the device path keeps its decoded images and how a batch gets there."""
from __future__ import annotations

import pytest
import torch

from contrastkit.data import batch_to_device, stage_images


def _images():
    return torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_cpu_training_keeps_the_array_and_gathers_the_batch():
    images = _images()
    cpu = torch.device("cpu")
    staged = stage_images(images, cpu)
    assert staged is images
    idx = torch.tensor([7, 2, 2, 0])
    batch = batch_to_device(staged, idx, cpu)
    assert torch.equal(batch, images[idx])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_holds_a_small_array_and_pins_batches_of_a_large_one():
    images = _images()
    dev = torch.device("cuda")
    idx = torch.tensor([7, 2, 2, 0])
    on_gpu = stage_images(images, dev)
    assert on_gpu.device.type == "cuda"
    assert torch.equal(batch_to_device(on_gpu, idx, dev).cpu(), images[idx])
    host = stage_images(images, dev, max_fraction=0.0)
    assert host is images
    batch = batch_to_device(host, idx, dev)
    assert batch.device.type == "cuda" and torch.equal(batch.cpu(), images[idx])
