"""The tiled kernel against the plain full-matrix autograd version: values and gradients, every tiling."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import reference_losses as ref
from contrastkit.losses import NTXentLoss, SupConLoss
from contrastkit.losses._contrastive import group_ids
from contrastkit.losses import _tiled as tiled
from contrastkit.losses._tiled import default_chunk_size, supcon_tiled


def _features(N, V, D, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, V, D, generator=g, dtype=dtype)


def _labels(kind, N, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return None
    if kind == "repeats":
        return torch.randint(0, 3, (N,), generator=g)
    if kind == "partial":  # some unlabelled
        lab = torch.randint(0, 3, (N,), generator=g)
        lab[torch.rand(N, generator=g) < 0.4] = -1
        return lab
    raise ValueError(kind)


def _value_and_grad(fn, x):
    x = x.clone().requires_grad_(True)
    loss = fn(x)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("V,labels_kind", [(2, "none"), (3, "none"), (2, "repeats"), (3, "partial"), (1, "repeats")])
@pytest.mark.parametrize("chunk", [1, 3, 7, "M", "M+5"])
def test_tiled_matches_plain_float32(variant, V, labels_kind, chunk):
    N, D, tau = 10, 8, 0.2
    M = N * V
    chunk_size = {"M": M, "M+5": M + 5}.get(chunk, chunk)
    x = _features(N, V, D, seed=V * 31 + len(labels_kind))
    labels = _labels(labels_kind, N, seed=7)
    if V == 1:
        labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 2])  # 4 has no positive: left out
    loss_fn = SupConLoss(temperature=tau, variant=variant, chunk_size=chunk_size)
    got, got_grad = _value_and_grad(lambda f: loss_fn(f, labels), x)
    want, want_grad = _value_and_grad(lambda f: ref.supcon_plain(f, labels, tau, variant), x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 7, 24, 100])
def test_ntxent_tiled_matches_cross_entropy_float32(chunk):
    N, D, tau = 12, 16, 0.1
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(N, D, generator=g), torch.randn(N, D, generator=g)
    x = torch.stack([z1, z2], 1)
    got, got_grad = _value_and_grad(lambda f: NTXentLoss(tau, chunk_size=chunk)(f[:, 0], f[:, 1]), x)
    want, want_grad = _value_and_grad(lambda f: ref.ntxent_plain(f[:, 0], f[:, 1], tau), x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("labels_kind", ["none", "partial"])
def test_custom_backward_gradcheck_float64(variant, labels_kind):
    N, V, D = 5, 2, 4
    x = _features(N, V, D, seed=11, dtype=torch.float64).reshape(N * V, D).requires_grad_(True)
    labels = _labels(labels_kind, N, seed=5)
    ids, G = group_ids(labels, N, x.device)
    groups = ids.repeat_interleave(V)

    def fn(rows):
        z = F.normalize(rows, dim=1)
        return supcon_tiled(z, groups, temperature=0.3, variant=variant, num_groups=G, chunk_size=3)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("variant", ["out", "in"])
def test_anchor_blocks_add_up_to_the_whole(variant):
    """Anchors as contiguous row blocks (the distributed layout): the block sums give the full sum and gradient."""
    N, V, D, tau = 9, 2, 6, 0.25
    x = _features(N, V, D, seed=2, dtype=torch.float64).reshape(N * V, D)
    labels = torch.tensor([0, 1, 1, -1, 2, 0, -1, 2, 2])
    ids, G = group_ids(labels, N, x.device)
    groups = ids.repeat_interleave(V)
    M = N * V
    want, want_grad = _value_and_grad(
        lambda r: supcon_tiled(F.normalize(r, dim=1), groups, temperature=tau, variant=variant, scale=1.0), x
    )
    total, total_grad = 0.0, torch.zeros_like(x)
    for start, count in [(0, 4), (4, 7), (11, M - 11)]:
        v, g = _value_and_grad(
            lambda r: supcon_tiled(
                F.normalize(r, dim=1), groups, temperature=tau, variant=variant,
                anchor_start=start, anchor_count=count, scale=1.0, chunk_size=3,
            ),
            x,
        )
        total, total_grad = total + v, total_grad + g
    torch.testing.assert_close(total, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(total_grad, want_grad, rtol=1e-10, atol=1e-12)
    # And the mean equals the plain implementation.
    plain = ref.supcon_plain(x.reshape(N, V, D), labels, tau, variant)
    torch.testing.assert_close(want / M, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("tau", [0.01, 0.02, 0.03, 0.05])
def test_underflowing_rows_fall_back_to_exact_logsumexp(variant, tau, monkeypatch):
    """Anchors whose nearest candidate is far (cosine << 1) underflow exp(L - 1/tau); results stay exact."""
    redone = []
    original = tiled._exact_rows
    monkeypatch.setattr(tiled, "_exact_rows", lambda *a: redone.append(a[4].numel()) or original(*a))
    D = 4
    e = torch.eye(D, dtype=torch.float32)
    # Sample 0: views e0 and -e0 (positive at cosine -1); the others sit at cosine 0 or -0.6 from it.
    z1 = torch.stack([e[0], e[1], e[2], -0.6 * e[0] + 0.8 * e[3]])
    z2 = torch.stack([-e[0], e[1] + 0.1 * e[2], e[2], -0.6 * e[0] + 0.8 * e[3]])
    feats = torch.stack([z1, z2], 1)  # (4, 2, 4)
    got = SupConLoss(tau, variant, chunk_size=3)(feats)
    want = ref.supcon_loop(feats, None, tau, variant)
    assert math.isfinite(got.item())
    assert got.item() == pytest.approx(want, rel=2e-5)
    got_grad = torch.autograd.grad(SupConLoss(tau, variant)(feats.requires_grad_(True)), feats)[0]
    want_grad = torch.autograd.grad(ref.supcon_plain(feats.double(), None, tau, variant), feats)[0]
    assert torch.isfinite(got_grad).all()
    torch.testing.assert_close(got_grad, want_grad.float(), rtol=1e-3, atol=1e-4)
    if variant == "in" and tau <= 0.02:
        assert sum(redone) > 0  # the positive of sample 0 is far below its nearest negative: exact path


@pytest.mark.parametrize("variant", ["out", "in"])
def test_fixed_shift_underflow_is_redone_exactly(variant, monkeypatch):
    """tau = 0.03 keeps the fixed shift 1/tau; an anchor whose nearest candidate is at cosine -0.94 underflows."""
    redone = []
    original = tiled._exact_rows
    monkeypatch.setattr(tiled, "_exact_rows", lambda *a: redone.append(a[4].numel()) or original(*a))
    angles = torch.tensor([[0.0, 180.0], [160.0, 200.0], [170.0, 190.0]]) * math.pi / 180
    feats = torch.stack([angles.cos(), angles.sin()], dim=-1).requires_grad_(True)  # (3, 2, 2)
    tau = 0.03
    got = SupConLoss(tau, variant)(feats)
    (got_grad,) = torch.autograd.grad(got, feats)
    assert sum(redone) > 0
    assert got.item() == pytest.approx(ref.supcon_loop(feats, None, tau, variant), rel=1e-5)
    want_grad = torch.autograd.grad(ref.supcon_plain(feats.double(), None, tau, variant), feats)[0]
    torch.testing.assert_close(got_grad, want_grad.float(), rtol=1e-3, atol=1e-4)


def _far_positive_cases():
    """The two hard cases above: a positive at cosine -1 below a negative at 0 (row-max shift), and an anchor
    whose nearest candidate is at cosine -0.94 (fixed shift, tau = 0.03)."""
    e = torch.eye(4, dtype=torch.float32)
    z1 = torch.stack([e[0], e[1], e[2], -0.6 * e[0] + 0.8 * e[3]])
    z2 = torch.stack([-e[0], e[1] + 0.1 * e[2], e[2], -0.6 * e[0] + 0.8 * e[3]])
    angles = torch.tensor([[0.0, 180.0], [160.0, 200.0], [170.0, 190.0]]) * math.pi / 180
    return [torch.stack([z1, z2], 1), torch.stack([angles.cos(), angles.sin()], dim=-1)]


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("tau", [0.01, 0.02, 0.03, 0.05])
@pytest.mark.parametrize("case", [0, 1])
def test_unchecked_loss_never_searches_and_stays_exact(variant, tau, case, monkeypatch):
    """check_values=False: no underflow search (it reads the device); the row-max shift, and for L_in a shift of
    the positives' own, keep the far positives exact instead."""
    redone = []
    original = tiled._exact_rows
    monkeypatch.setattr(tiled, "_exact_rows", lambda *a: redone.append(a[4].numel()) or original(*a))
    feats = _far_positive_cases()[case].requires_grad_(True)
    got = SupConLoss(tau, variant, chunk_size=3, check_values=False)(feats)
    (got_grad,) = torch.autograd.grad(got, feats)
    assert redone == []
    assert got.item() == pytest.approx(ref.supcon_loop(feats, None, tau, variant), rel=2e-5)
    want_grad = torch.autograd.grad(ref.supcon_plain(feats.double(), None, tau, variant), feats)[0]
    assert torch.isfinite(got_grad).all()
    torch.testing.assert_close(got_grad, want_grad.float(), rtol=1e-3, atol=1e-4)


def test_default_chunk_size_by_device_and_size():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_chunk_size(8192, cpu) * 8192 * 4 <= 16 * 2**20
    assert default_chunk_size(8192, cuda) > default_chunk_size(8192, cpu)
    assert default_chunk_size(10**8, cpu) == 128  # never too few rows, however large M
    assert default_chunk_size(4, cpu) >= 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", ["out", "in"])
def test_cuda_matches_cpu(variant):
    x = _features(16, 2, 8, seed=4)
    labels = _labels("partial", 16, seed=4)
    cpu, cpu_grad = _value_and_grad(lambda f: SupConLoss(0.1, variant, chunk_size=5)(f, labels), x)
    gpu, gpu_grad = _value_and_grad(lambda f: SupConLoss(0.1, variant, chunk_size=5)(f, labels.cuda()), x.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gpu_grad.cpu(), cpu_grad, rtol=1e-4, atol=1e-6)
