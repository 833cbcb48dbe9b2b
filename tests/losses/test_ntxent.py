"""NTXentLoss against the float64 loop reference, closed forms and invariants."""
from __future__ import annotations

import math

import pytest
import torch

import reference_losses as ref
from contrastkit.losses import NTXentLoss


def _pair(N, D, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g, dtype=dtype), torch.randn(N, D, generator=g, dtype=dtype)


@pytest.mark.parametrize("N", [2, 3, 8, 17])
@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5, 2.0])
def test_matches_loop_reference(N, tau):
    z1, z2 = _pair(N, 5, seed=N)
    assert NTXentLoss(tau)(z1, z2).item() == pytest.approx(ref.ntxent_loop(z1, z2, tau), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 40])
def test_chunk_size_does_not_change_the_value(chunk):
    z1, z2 = _pair(8, 4, seed=1)
    want = ref.ntxent_loop(z1, z2, 0.2)
    assert NTXentLoss(0.2, chunk_size=chunk)(z1, z2).item() == pytest.approx(want, rel=1e-12)


def test_hand_placed_orthogonal_pairs():
    """Views of sample i both at e_i: positive cosine 1, negatives 0."""
    N, tau = 4, 0.5
    e = torch.eye(N, dtype=torch.float64)
    want = math.log(1 + (2 * N - 2) * math.exp(-1 / tau))
    assert NTXentLoss(tau)(e, 3.0 * e).item() == pytest.approx(want, rel=1e-12)
    assert ref.ntxent_loop(e, 3.0 * e, tau) == pytest.approx(want, rel=1e-12)


def test_hand_placed_opposite_views():
    """Views at e_i and -e_i: positive cosine -1, negatives 0."""
    N, tau = 3, 0.25
    e = torch.eye(N, dtype=torch.float64)
    want = math.log(1 + (2 * N - 2) * math.exp(1 / tau))
    assert NTXentLoss(tau)(e, -e).item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("N", [2, 5])
def test_identical_embeddings_give_log_of_candidates(N):
    z = torch.ones(N, 3)
    loss = NTXentLoss(0.1)(z, z)
    assert loss.item() == pytest.approx(math.log(2 * N - 1), rel=1e-6)


def test_permutation_and_view_swap_invariance():
    z1, z2 = _pair(9, 6, seed=4)
    loss = NTXentLoss(0.3)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    base = loss(z1, z2)
    torch.testing.assert_close(loss(z1[perm], z2[perm]), base)
    torch.testing.assert_close(loss(z2, z1), base)


def test_scale_invariance_of_inputs():
    z1, z2 = _pair(6, 4, seed=5)
    torch.testing.assert_close(NTXentLoss()(z1 * 1e5, z2 * 1e-5), NTXentLoss()(z1, z2))


def test_matches_plain_cross_entropy_float32():
    z1, z2 = _pair(16, 32, seed=6, dtype=torch.float32)
    torch.testing.assert_close(NTXentLoss(0.1)(z1, z2), ref.ntxent_plain(z1, z2, 0.1), rtol=1e-5, atol=1e-5)
