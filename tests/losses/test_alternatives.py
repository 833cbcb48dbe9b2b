"""NTLogisticLoss, MarginTripletLoss and NPairLoss against their float64 loop references."""
from __future__ import annotations

import math

import pytest
import torch

import reference_losses as ref
from contrastkit.losses import MarginTripletLoss, NPairLoss, NTLogisticLoss, NTXentLoss


def _pair(N, D, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g, dtype=dtype), torch.randn(N, D, generator=g, dtype=dtype)


@pytest.mark.parametrize("N", [2, 5, 9])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("semi_hard", [False, True])
def test_ntlogistic_matches_loop(N, tau, semi_hard):
    z1, z2 = _pair(N, 4, seed=N)
    got = NTLogisticLoss(tau, semi_hard=semi_hard)(z1, z2).item()
    assert got == pytest.approx(ref.ntlogistic_loop(z1, z2, tau, semi_hard), rel=1e-12)


def test_ntlogistic_semi_hard_keeps_only_negatives_farther_than_the_positive():
    e = torch.eye(3, dtype=torch.float64)
    tau = 0.5
    # Positive at cosine 1, negatives at 0: all farther, semi-hard = all.
    torch.testing.assert_close(NTLogisticLoss(tau, semi_hard=True)(e, e), NTLogisticLoss(tau)(e, e))
    # Identical embeddings: no negative farther; fallback to one hard negative at cosine 1.
    z = torch.ones(3, 2, dtype=torch.float64)
    want = 2 * math.log1p(math.exp(-1 / tau)) + 1 / tau
    assert NTLogisticLoss(tau, semi_hard=True)(z, z).item() == pytest.approx(want, rel=1e-12)


def test_ntlogistic_hand_placed_and_stable_for_tiny_tau():
    e = torch.eye(3, dtype=torch.float64)
    tau = 0.5
    want = math.log1p(math.exp(-1 / tau)) + math.log(2.0)  # positive at cosine 1, negatives at 0
    assert NTLogisticLoss(tau)(e, e).item() == pytest.approx(want, rel=1e-12)
    z1, z2 = _pair(4, 3, seed=0, dtype=torch.float32)
    assert math.isfinite(NTLogisticLoss(1e-4)(z1, -z1).item())


@pytest.mark.parametrize("N", [2, 6, 11])
@pytest.mark.parametrize("margin", [0.0, 0.1, 0.5, 1.5])
@pytest.mark.parametrize("semi_hard", [False, True])
def test_triplet_matches_loop(N, margin, semi_hard):
    z1, z2 = _pair(N, 3, seed=N)
    got = MarginTripletLoss(margin, semi_hard)(z1, z2).item()
    assert got == pytest.approx(ref.triplet_loop(z1, z2, margin, semi_hard), rel=1e-12, abs=1e-14)


def test_semi_hard_mining_hand_placed():
    """Anchor e0 with positive at cosine 0.8: negatives at 0.75 (semi-hard), 0.9 (hard), 0 (easy)."""
    m = 0.2
    s = math.sqrt(1 - 0.8**2)
    e = torch.eye(4, dtype=torch.float64)
    pos = 0.8 * e[0] + s * e[1]
    semi = 0.75 * e[0] + math.sqrt(1 - 0.75**2) * e[2]
    hard = 0.9 * e[0] + math.sqrt(1 - 0.9**2) * e[3]
    z1 = torch.stack([e[0], semi, hard])
    z2 = torch.stack([pos, semi, hard])
    loss = MarginTripletLoss(m, semi_hard=True)
    assert loss(z1, z2).item() == pytest.approx(ref.triplet_loop(z1, z2, m, True), rel=1e-12)
    # Anchor 0 alone: its chosen negatives are the two copies of `semi` (cost 0.75 - 0.8 + 0.2 = 0.15).
    _, negs = ref._pair_sims_loop(z1, z2)[0]
    chosen = [n for n in negs if 0.8 - m < n < 0.8]
    assert chosen == pytest.approx([0.75, 0.75])


def test_semi_hard_fallbacks():
    # Identical embeddings: no semi-hard negative, all hard (cosine = positive): fallback costs exactly m.
    z = torch.ones(4, 3)
    assert MarginTripletLoss(0.3, semi_hard=True)(z, z).item() == pytest.approx(0.3, rel=1e-6)
    # Orthogonal pairs with positive at 1, negatives at 0 < 1 - m: every negative easy, cost 0.
    e = torch.eye(3)
    assert MarginTripletLoss(0.3, semi_hard=True)(e, e).item() == 0.0


@pytest.mark.parametrize("N", [2, 4, 7])
def test_npair_matches_loop_and_equals_ntxent_at_tau_one(N):
    z1, z2 = _pair(N, 5, seed=N)
    got = NPairLoss()(z1, z2)
    assert got.item() == pytest.approx(ref.npair_loop(z1, z2), rel=1e-12)
    torch.testing.assert_close(got, NTXentLoss(1.0)(z1, z2))


@pytest.mark.parametrize(
    "loss",
    [NTLogisticLoss(), NTLogisticLoss(semi_hard=True), MarginTripletLoss(), MarginTripletLoss(semi_hard=True),
     NPairLoss()],
    ids=repr,
)
def test_permutation_invariance_and_finite_gradients(loss):
    z1, z2 = _pair(6, 4, seed=3, dtype=torch.float32)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(loss(z1[perm], z2[perm]), loss(z1, z2))
    x = torch.stack([z1, z2]).requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x[0], x[1]), x)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("N", [2, 3, 7])
def test_view_similarities_gather_equals_the_boolean_mask(N):
    from contrastkit.losses._pairwise import view_similarities

    z1, z2 = _pair(N, 4, seed=N)
    positive, negatives = view_similarities(z1, z2)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t()
    idx = torch.arange(2 * N)
    mask = torch.ones(2 * N, 2 * N, dtype=torch.bool)
    mask[idx, idx] = False
    mask[idx, (idx + N) % (2 * N)] = False
    torch.testing.assert_close(negatives, sim[mask].view(2 * N, 2 * N - 2))  # same values in the same order
    torch.testing.assert_close(positive, sim[idx, (idx + N) % (2 * N)])


@pytest.mark.parametrize("make", [lambda c: NTLogisticLoss(semi_hard=True, check_values=c),
                                  lambda c: MarginTripletLoss(semi_hard=True, check_values=c),
                                  lambda c: NPairLoss(check_values=c)], ids=["ntlogistic", "triplet", "npair"])
def test_check_values_false_gives_nan_for_nan_inputs_and_the_same_loss(make):
    z1, z2 = _pair(5, 4, seed=1)
    assert make(False)(z1, z2).item() == make(True)(z1, z2).item()
    bad = z1.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        make(True)(bad, z2)
    assert math.isnan(make(False)(bad, z2).item())
    assert "check_values=False" in repr(make(False)) and "check_values" not in repr(make(True))
    with pytest.raises(TypeError, match="check_values must be True or False, got int 0"):
        make(0)
