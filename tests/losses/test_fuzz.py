"""Hypothesis fuzzing (issue 6): shapes, labels with and without repeats, -1 labels, extreme finite values."""
from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference_losses as ref
from contrastkit.losses import NTXentLoss, SupConLoss

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def batches(draw):
    N = draw(st.integers(1, 6))
    V = draw(st.integers(1, 3))
    D = draw(st.integers(1, 5))
    use_labels = draw(st.booleans()) or V == 1
    labels = None
    if use_labels:
        labels = torch.tensor(draw(st.lists(st.integers(-1, 3), min_size=N, max_size=N)))
    exponent = draw(st.integers(-30, 30))  # extreme but finite magnitudes
    seed = draw(st.integers(0, 2**31 - 1))
    x = torch.randn(N, V, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 10.0**exponent
    if draw(st.booleans()):  # duplicated rows: ties and identical embeddings
        x[:, -1] = x[:, 0]
    tau = draw(st.sampled_from([0.02, 0.07, 0.1, 0.5, 1.0]))
    variant = draw(st.sampled_from(["out", "in"]))
    chunk = draw(st.one_of(st.none(), st.integers(1, 20)))
    return x, labels, tau, variant, chunk


def _has_positive(N, V, labels):
    if V >= 2:
        return True
    counts = {}
    for y in labels.tolist():
        if y >= 0:
            counts[y] = counts.get(y, 0) + 1
    return any(c > 1 for c in counts.values())


@FUZZ
@given(batches())
def test_supcon_fuzz_matches_reference(batch):
    x, labels, tau, variant, chunk = batch
    N, V, _ = x.shape
    loss_fn = SupConLoss(tau, variant, chunk_size=chunk)
    if N < 2 or N * V < 2 or not _has_positive(N, V, labels):  # one sample: no negative, with labels or not
        try:
            loss_fn(x, labels)
        except ValueError:
            return
        raise AssertionError("expected a ValueError")
    x = x.requires_grad_(True)
    loss = loss_fn(x, labels)
    (grad,) = torch.autograd.grad(loss, x)
    assert math.isfinite(loss.item()) and torch.isfinite(grad).all()
    want = ref.supcon_loop(x, labels, tau, variant)
    assert math.isclose(loss.item(), want, rel_tol=1e-9, abs_tol=1e-9), (loss.item(), want)
    # float32 agrees too, for magnitudes float32 can hold.
    if 1e-30 < x.abs().max() < 1e30:
        loss32 = loss_fn(x.detach().float(), labels)
        assert math.isfinite(loss32.item())
        assert math.isclose(loss32.item(), want, rel_tol=1e-4, abs_tol=1e-4), (loss32.item(), want)


@FUZZ
@given(
    N=st.integers(2, 7),
    D=st.integers(1, 6),
    exponent=st.integers(-300, 300),
    seed=st.integers(0, 2**31 - 1),
    tau=st.floats(0.01, 5.0),
)
def test_ntxent_fuzz_matches_reference(N, D, exponent, seed, tau):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(N, D, generator=g, dtype=torch.float64) * 10.0**exponent
    z2 = torch.randn(N, D, generator=g, dtype=torch.float64) * 10.0**exponent
    loss = NTXentLoss(tau)(z1, z2).item()
    assert math.isfinite(loss)
    assert math.isclose(loss, ref.ntxent_loop(z1, z2, tau), rel_tol=1e-9, abs_tol=1e-9)
