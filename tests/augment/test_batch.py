"""BatchAugment: shapes, seeds, switches, exactness against torchvision op by op, and distributions
against the torchvision per-image pipeline."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from contrastkit.augment import CIFAR10_MEAN_STD, BatchAugment, SimCLRTransform
from contrastkit.augment import functional as AF
from contrastkit.augment.batch import sample_jitter_params

OFF = dict(crop=False, flip=False, color=False, grayscale=False, blur=False, normalize=None)


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().mul(1.0 / 255)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- shapes, dtypes, seeds
def test_shapes_and_dtypes(images32, make_images):
    aug = BatchAugment.from_preset("cifar", n_views=3)
    for x in (images32[:8], to_float(images32[:8]), to_float(images32[:8]).double(), images32[:8, :1],
              make_images(8, 48, seed=5)):
        views = aug(x)
        assert isinstance(views, list) and len(views) == 3
        assert all(v.shape == (8, 3, 32, 32) and v.dtype == torch.float32 for v in views)
        assert all(torch.isfinite(v).all() for v in views)
    assert aug(images32[:0])[0].shape == (0, 3, 32, 32)


def test_uint8_and_float_inputs_agree(images32):
    aug = BatchAugment.from_preset("cifar", n_views=2)
    a = aug(images32[:16], generator=gen(3))
    b = aug(to_float(images32[:16]), generator=gen(3))
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))


def test_seeded_reproducibility(images32):
    aug = BatchAugment.from_preset("cifar", n_views=2, blur=True, rotate=0.5, cutout=0.5, solarize=0.5)
    x = images32[:20]
    a, b = aug(x, generator=gen(1)), aug(x, generator=gen(1))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], a[1])  # the two views differ
    assert not torch.equal(aug(x, generator=gen(2))[0], a[0])
    torch.manual_seed(4)
    c = aug(x)
    torch.manual_seed(4)
    d = aug(x)
    assert all(torch.equal(u, v) for u, v in zip(c, d))


def test_each_sample_gets_its_own_parameters(images32):
    same = images32[:1].expand(32, -1, -1, -1)
    v = BatchAugment.from_preset("cifar", n_views=1)(same, generator=gen(0))[0]
    assert len({tuple(v[i].flatten()[:50].tolist()) for i in range(32)}) == 32


# ---------------------------------------------------------------- switches
def test_everything_off_is_a_resize(images32, make_images):
    x = images32[:6]
    assert torch.equal(BatchAugment(32, **OFF, n_views=1)(x)[0], to_float(x))
    big = make_images(4, 48, seed=1)
    out = BatchAugment(32, **OFF, n_views=1)(big)[0]
    assert torch.allclose(out, TF.resize(to_float(big), [32, 32], antialias=True), atol=1e-6)
    norm = BatchAugment(32, **{**OFF, "normalize": "cifar10"}, n_views=1)(x)[0]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in CIFAR10_MEAN_STD)
    assert torch.allclose(norm, (to_float(x) - mean) / std, atol=1e-5)


def test_single_switches(images32):
    x = images32[:24]
    g = BatchAugment(32, **{**OFF, "grayscale": True, "grayscale_p": 1.0}, n_views=1)(x)[0]
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])

    f = BatchAugment(32, **{**OFF, "flip": True}, n_views=1)(x, generator=gen(0))[0]
    mirrored = torch.tensor([torch.equal(f[i], to_float(x[i]).flip(-1)) for i in range(24)])
    kept = torch.tensor([torch.equal(f[i], to_float(x[i])) for i in range(24)])
    assert (mirrored ^ kept).all() and mirrored.any() and kept.any()

    r = BatchAugment(32, **{**OFF, "rotate": 1.0}, n_views=1)(x, generator=gen(0))[0]
    turns = [[k for k in (1, 2, 3) if torch.equal(r[i], torch.rot90(to_float(x[i]), k, dims=(-2, -1)))] for i in range(24)]
    assert all(len(t) == 1 for t in turns) and {t[0] for t in turns} == {1, 2, 3}

    s = BatchAugment(32, **{**OFF, "solarize": 1.0}, n_views=1)(x)[0]
    assert torch.allclose(s, to_float(TF.solarize(x, 128)), atol=1e-6)

    c = BatchAugment(32, **{**OFF, "cutout": 1.0}, n_views=1)(x, generator=gen(0))[0]
    for i in range(24):
        hole = (c[i] != to_float(x[i])).any(0)
        rows, cols = hole.any(1).sum(), hole.any(0).sum()
        assert (c[i][:, hole] == 0).all() and hole.sum() == rows * cols and 0 < rows <= 16 and 0 < cols <= 16

    for name in ("color", "blur"):
        changed = BatchAugment(32, **{**OFF, name: True, f"{name}_p": 1.0}, n_views=1)(x)[0]
        assert not torch.isclose(changed, to_float(x)).all(dim=(1, 2, 3)).any(), name


# ---------------------------------------------------------------- exactness, op by op
def test_colour_jitter_equals_torchvision_with_the_same_parameters(make_images):
    """Parameters are redrawn here in BatchAugment's order (with crop, flip and rotate off the
    jitter parameters are the first draws) and applied with torchvision's functionals."""
    x = to_float(make_images(48, 16, seed=6))
    aug = BatchAugment(16, **{**OFF, "color": True, "color_strength": 1.0}, n_views=1)
    out = aug(x, generator=gen(11))[0]
    applied, order, factors = sample_jitter_params(48, aug.config.jitter, 0.8, gen(11))
    fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(48):
        ref = x[i]
        if applied[i]:
            for op in order[i].tolist():
                ref = fns[op](ref, float(factors[i, op]))
        assert torch.allclose(out[i], ref, atol=1e-5), i
    assert applied.any() and not applied.all()


def test_crop_and_flip_equal_torchvision_with_the_same_parameters(make_images):
    """Flip is drawn first, then the crop boxes (BatchAugment's order)."""
    x = to_float(make_images(16, 32, seed=7))
    S = 24
    out = BatchAugment(S, **{**OFF, "crop": True, "flip": True}, n_views=1)(x, generator=gen(5))[0]
    g = gen(5)
    flip = torch.rand(16, generator=g) < 0.5
    top, left, h, w = AF.sample_crop_boxes(16, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), g)
    for i in range(16):
        ref = TF.resized_crop(x[i], int(top[i]), int(left[i]), int(h[i]), int(w[i]), [S, S], antialias=False)
        ref = ref.flip(-1) if flip[i] else ref
        by, bx = math.ceil(S / (2 * int(h[i]))), math.ceil(S / (2 * int(w[i])))
        inner = (slice(None), slice(by, S - by), slice(bx, S - bx))
        assert torch.allclose(out[i][inner], ref[inner], atol=1e-5), i


def test_jitter_order_is_a_uniform_permutation():
    applied, order, factors = sample_jitter_params(4800, (0.4, 0.4, 0.4, 0.1), 0.8, gen(0))
    assert (order.sort(dim=1).values == torch.arange(4)).all()
    counts = torch.unique(order, dim=0, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > 140 and counts.max() < 260  # 200 expected each
    assert abs(applied.float().mean() - 0.8) < 0.02
    lo, hi = factors[applied].min(0).values, factors[applied].max(0).values
    assert torch.allclose(lo, torch.tensor([0.6, 0.6, 0.6, -0.1]), atol=0.01)
    assert torch.allclose(hi, torch.tensor([1.4, 1.4, 1.4, 0.1]), atol=0.01)
    assert (factors[~applied] == torch.tensor([1.0, 1.0, 1.0, 0.0])).all()


# ---------------------------------------------------------------- distributions vs the per-image pipeline
def torchvision_pipeline(size: int, strength: float, blur: bool) -> v2.Compose:
    s = strength
    ops = [v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip(),
           v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8), v2.RandomGrayscale(p=0.2)]
    if blur:
        ops.append(v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 2.0))], p=0.5))
    return v2.Compose(ops + [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


@pytest.fixture(scope="module")
def cifar_samples(make_images):
    """1024 views from each side: torchvision per image (PIL) and BatchAugment, cifar preset without normalisation."""
    images = make_images(64, 32, seed=8)
    pil = [TF.to_pil_image(im) for im in images]
    torch.manual_seed(0)
    tv = torchvision_pipeline(32, 0.5, blur=False)
    ref = torch.stack([tv(im) for _ in range(16) for im in pil])  # (1024, 3, 32, 32)
    aug = BatchAugment.from_preset("cifar", normalize=None, n_views=16)
    ours = torch.cat(aug(images, generator=gen(0)))  # (1280, 3, 32, 32)
    return ref, ours


def test_channel_statistics_match(cifar_samples):
    ref, ours = cifar_samples
    for stat in (lambda t: t.mean(dim=(0, 2, 3)), lambda t: t.std(dim=(0, 2, 3))):
        assert torch.allclose(stat(ours), stat(ref), atol=0.015), (stat(ours), stat(ref))
    # per-view mean brightness and contrast distributions (two-sample KS, 0.1% level ~0.086)
    for per_view in (lambda t: t.mean(dim=(1, 2, 3)), lambda t: t.std(dim=(1, 2, 3))):
        a, b = per_view(ours), per_view(ref)
        grid = torch.cat([a, b]).sort().values
        cdf = lambda s: torch.searchsorted(s.sort().values, grid, right=True).double() / len(s)  # noqa: E731
        assert float((cdf(a) - cdf(b)).abs().max()) < 0.086


def test_grayscale_fraction_matches(cifar_samples):
    ref, ours = cifar_samples
    is_gray = lambda t: ((t[:, 0] - t[:, 1]).abs().amax(dim=(1, 2)) < 1e-6) & ((t[:, 1] - t[:, 2]).abs().amax(dim=(1, 2)) < 1e-6)  # noqa: E731
    for frac in (is_gray(ref).double().mean(), is_gray(ours).double().mean()):
        assert abs(float(frac) - 0.2) < 0.04  # binomial sd 0.0125 at n = 1024


def test_blur_sigma_range_matches():
    """Blur an impulse: its centre value k(0)^2 maps one-to-one to sigma."""
    n, size = 400, 64  # kernel 7 at 64 px
    impulse = torch.zeros(n, 3, size, size)
    impulse[:, :, size // 2, size // 2] = 1.0
    ours = BatchAugment(size, **{**OFF, "blur": True, "blur_p": 1.0}, n_views=1)(impulse, generator=gen(0))[0]
    torch.manual_seed(0)
    tv = v2.GaussianBlur(7, sigma=(0.1, 2.0))
    ref = torch.stack([tv(impulse[i]) for i in range(n)])
    centre = lambda t: t[:, 0, size // 2, size // 2]  # noqa: E731
    sigmas = torch.linspace(0.1, 2.0, 1901)
    table = AF.gaussian_kernels(sigmas, 7)[:, 3] ** 2  # centre value, decreasing in sigma
    for c in (centre(ours), centre(ref)):
        assert c.max() <= table[0] + 1e-6 and c.min() >= table[-1] - 1e-6  # sigma within [0.1, 2]
    sig = lambda c: sigmas[(table.view(1, -1) - c.view(-1, 1)).abs().argmin(dim=1)]  # noqa: E731
    a, b = sig(centre(ours)), sig(centre(ref))
    assert abs(a.mean() - 1.05) < 0.08 and abs(b.mean() - 1.05) < 0.08  # uniform on [0.1, 2]
    assert abs(a.std() - b.std()) < 0.08


def test_per_image_and_batched_share_the_config():
    t, b = SimCLRTransform.from_preset("imagenet", rotate=0.3), BatchAugment.from_preset("imagenet", rotate=0.3)
    assert t.config == b.config


# ---------------------------------------------------------------- validation
def test_forward_validation(images32):
    aug = BatchAugment.from_preset("cifar")
    with pytest.raises(TypeError, match="images must be a tensor"):
        aug(images32.numpy())
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) with C in \{1, 3\}, got \(3, 32, 32\)"):
        aug(images32[0])
    with pytest.raises(ValueError, match=r"got \(2, 4, 32, 32\)"):
        aug(torch.zeros(2, 4, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8 or floating point in \\[0, 1\\], got dtype torch.int32"):
        aug(images32.int())
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\], got values in \[0, 255\]"):
        aug(images32.float())
    with pytest.raises(ValueError, match="must lie in"):
        aug(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        aug(images32, generator=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(images32):  # pragma: no cover - GPU only
    aug = BatchAugment.from_preset("cifar", blur=True, cutout=0.5).cuda()
    cpu = aug(images32, generator=gen(0))
    gpu = aug(images32.cuda(), generator=gen(0))
    assert all(torch.allclose(c, g.cpu(), atol=1e-4) for c, g in zip(cpu, gpu))
    dev_gen = torch.Generator("cuda").manual_seed(0)
    assert all(v.is_cuda for v in aug(images32.cuda(), generator=dev_gen))
