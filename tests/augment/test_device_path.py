"""BatchAugment on an accelerator: the whole batch is one chunk and each view's parameters make one packed copy.

Checked without a GPU: the split is decided by ``chunk_rows(device, ...)``, which the meta device answers as every
non-CPU device does; on meta the kernels (every non-view aten op) and host-to-device copies of a view are counted.
On a GPU, kernels and copies cost a launch each: CPU-sized chunks at 224 px made ~10,700 kernels and ~1,650 copies
per step there.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import contrastkit.augment.batch as batch_module
from contrastkit.augment import BatchAugment
from contrastkit.augment._transfer import chunk_rows, pack_to_device

META, CPU = torch.device("meta"), torch.device("cpu")


class OpCounter(TorchDispatchMode):
    """Counts the kernels (non-view aten ops producing a tensor off the CPU) and the copies from the CPU to
    another device."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outs = out if isinstance(out, (tuple, list)) else [out]
        on_device = any(isinstance(t, torch.Tensor) and t.device.type != "cpu" for t in outs)
        name = str(func)
        if name.startswith("aten._to_copy") and args[0].device.type == "cpu" and on_device:
            self.copies += 1
        elif name.startswith("aten.copy_") and args[1].device.type == "cpu" and args[0].device.type != "cpu":
            self.copies += 1
        elif on_device and not func.is_view:
            self.kernels += 1
        return out


def test_the_split_is_one_chunk_off_the_cpu():
    assert chunk_rows(META, 224, 256) == 256 and chunk_rows(torch.device("cuda"), 32, 512) == 512
    assert chunk_rows(CPU, 224, 256) == 4 * torch.get_num_threads()  # cache-sized: at least 4 rows per thread
    assert chunk_rows(CPU, 32, 256) == 64 * torch.get_num_threads()


def test_packing_is_one_copy_and_gives_back_every_tensor():
    g = torch.Generator().manual_seed(0)
    tensors = {"idx": torch.randint(0, 9, (5,), generator=g), "theta": torch.randn(3, 2, 3, generator=g),
               "flag": torch.rand(7, generator=g) < 0.5, "empty": torch.zeros(0, dtype=torch.long),
               "half": torch.randn(3, generator=g).half(), "box": torch.randint(-4, 4, (3, 4), generator=g)}
    with OpCounter() as ops:
        moved = pack_to_device(tensors, META)
    assert ops.copies == 1
    for key, t in tensors.items():
        assert moved[key].device == META and moved[key].dtype == t.dtype and moved[key].shape == t.shape, key
    assert pack_to_device(tensors, CPU)["theta"] is tensors["theta"]  # on the CPU nothing moves


def test_packing_round_trips_every_value(monkeypatch):
    """The byte layout: a 'device' whose copy is a CPU clone gets back every tensor, values included."""
    class FakeDevice:
        type = "fake"

    real_to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, device, *a, **k: self.clone()
                        if isinstance(device, FakeDevice) else real_to(self, device, *a, **k))
    g = torch.Generator().manual_seed(1)
    tensors = {"idx": torch.randint(-2**40, 2**40, (5,), generator=g), "theta": torch.randn(3, 2, 3, generator=g),
               "flag": torch.rand(7, generator=g) < 0.5, "half": torch.randn(3, generator=g).half(),
               "col": torch.randn(4, 6, generator=g).t()}  # a non-contiguous one
    moved = pack_to_device(tensors, FakeDevice())
    for key, t in tensors.items():
        assert moved[key].dtype == t.dtype and torch.equal(moved[key], t), key


@pytest.mark.parametrize("preset, overrides", [
    ("imagenet", {}), ("imagenet", {"crop": False, "rotate": 0.5, "cutout": 0.5, "solarize": 0.2}),
])
def test_a_224px_view_on_an_accelerator_is_a_few_dozen_kernels_and_one_copy(preset, overrides, monkeypatch):
    aug = BatchAugment.from_preset(preset, n_views=2, size=224, **overrides).to(META)
    images = torch.empty(128, 3, 256, 256, dtype=torch.uint8, device=META)
    aug(images[:2], generator=torch.Generator().manual_seed(0))  # warm: the cached sampling grid is copied once
    with OpCounter() as one_chunk:
        views = aug(images, generator=torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(128, 3, 224, 224)] * 2
    assert one_chunk.copies == 2  # one packed copy per view
    assert one_chunk.kernels <= 2 * 300, one_chunk.kernels  # colour jitter: 4 blends and 4 hue passes (~40 each)
    # the control: the CPU's cache-sized chunks on the same device
    monkeypatch.setattr(batch_module, "chunk_rows", lambda device, size, batch: chunk_rows(CPU, size, batch))
    with OpCounter() as cpu_chunks:
        aug(images, generator=torch.Generator().manual_seed(0))
    assert cpu_chunks.copies >= 2 * 128 // 4 and cpu_chunks.kernels > 10 * one_chunk.kernels, (cpu_chunks.copies, cpu_chunks.kernels)


@pytest.mark.parametrize("preset, overrides", [
    ("cifar", {}), ("imagenet", {"size": 48}),
    ("imagenet", {"size": 40, "crop": False, "rotate": 0.5, "cutout": 0.5, "solarize": 0.2}),
])
def test_one_chunk_gives_the_views_of_cpu_chunks(preset, overrides, make_images, monkeypatch):
    """The single-chunk rendering (every jitter group at once, hue on contiguous slices) equals the per-group CPU
    chunks, on the CPU, to float rounding."""
    aug = BatchAugment.from_preset(preset, n_views=2, **overrides)
    images = make_images(70, 56)
    chunked = aug(images, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(batch_module, "chunk_rows", lambda device, size, batch: batch)
    single = aug(images, generator=torch.Generator().manual_seed(5))
    for a, b in zip(chunked, single):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
