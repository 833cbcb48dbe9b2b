import pytest
import torch
import torch.nn.functional as F

from contrastkit import create_encoder
from contrastkit.evaluate import class_balanced_subset, dataset_labels, finetune, random_crop_flip


def test_random_crop_flip_shapes_and_identity():
    x = torch.randn(5, 3, 8, 8)
    out = random_crop_flip(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(random_crop_flip(x, padding=0, flip_prob=0.0), x)
    assert torch.equal(random_crop_flip(x, padding=0, flip_prob=1.0), x.flip(-1))


def test_random_crop_is_a_window_of_the_padded_image():
    x = torch.randn(6, 3, 5, 7)
    out = random_crop_flip(x, padding=2, flip_prob=0.0, generator=torch.Generator().manual_seed(0))
    padded = F.pad(x, (2, 2, 2, 2))
    for b in range(6):
        windows = [padded[b, :, i : i + 5, j : j + 7] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)


def test_random_crop_flip_errors():
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\)"):
        random_crop_flip(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        random_crop_flip(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        random_crop_flip(torch.zeros(1, 3, 8, 8), padding=-1)


def test_finetune_beats_chance_and_keeps_encoder(colour_images):
    train, test = colour_images(24, seed=0), colour_images(16, seed=1)
    idx = class_balanced_subset(dataset_labels(train), 0.5, seed=0)
    torch.manual_seed(0)
    encoder = create_encoder("resnet18", cifar_stem=True, width=0.125)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    res = finetune(encoder, train, test, idx, num_classes=2, epochs=4, lr=0.05, batch_size=8, seed=0)
    assert res["top1"] > 0.75
    assert res["top5"] is None  # 2 classes: no top-5
    assert res["n_train"] == 24 == res["recipe"]["n_train"]
    assert res["recipe"]["steps"] == 4 * 3
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert torch.equal(rng_before, torch.random.get_rng_state())


def test_finetune_reproducible_and_from_scratch_control(colour_images):
    train, test = colour_images(6, seed=0), colour_images(4, seed=1)
    idx = torch.arange(12)
    torch.manual_seed(1)
    fresh = create_encoder("resnet18", cifar_stem=True, width=0.125)  # the from-scratch control
    a = finetune(fresh, train, test, idx, num_classes=2, epochs=1, batch_size=5, seed=3, return_model=True)
    b = finetune(fresh, train, test, idx, num_classes=2, epochs=1, batch_size=5, seed=3)
    assert a["top1"] == b["top1"] and a["recipe"] == b["recipe"]
    assert a["recipe"]["lr"] == pytest.approx(0.05 * 5 / 256)
    assert isinstance(a["model"], torch.nn.Module)


def test_finetune_errors(colour_images):
    train, test = colour_images(4), colour_images(2)
    enc = create_encoder("resnet18", cifar_stem=True, width=0.125)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 7\]"):
        finetune(enc, train, test, torch.tensor([0, 8]), num_classes=2, epochs=1)
    with pytest.raises(ValueError, match="indices is empty"):
        finetune(enc, train, test, torch.tensor([], dtype=torch.long), num_classes=2, epochs=1)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        finetune(enc, train, test, torch.arange(4), num_classes=1, epochs=1)
    with pytest.raises(TypeError, match="batch_augment must be callable or None"):
        finetune(enc, train, test, torch.arange(4), num_classes=2, epochs=1, batch_augment=3)
    with pytest.raises(ValueError, match="batch_augment must keep the batch shape"):
        finetune(enc, train, test, torch.arange(4), num_classes=2, epochs=1, batch_augment=lambda x: x[:, :, :4])
