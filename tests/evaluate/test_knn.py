import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.evaluate import knn_accuracy


def _slow_knn_top1(train, train_y, test, test_y, k, temperature, num_classes, leave_one_out=False):
    """Obviously correct loop version, float64."""
    train = F.normalize(train.double(), dim=1)
    test = F.normalize(test.double(), dim=1)
    hits = 0
    for i in range(test.shape[0]):
        sims = [(float(test[i] @ train[j]), j) for j in range(train.shape[0]) if not (leave_one_out and j == i)]
        sims.sort(key=lambda t: -t[0])
        votes = [0.0] * num_classes
        for s, j in sims[:k]:
            votes[int(train_y[j])] += math.exp(s / temperature)
        hits += int(max(range(num_classes), key=lambda c: votes[c]) == int(test_y[i]))
    return hits / test.shape[0]


def test_separable_gives_one(clusters):
    x, y = clusters(30, 4)
    res = knn_accuracy(x[:80], y[:80], x[80:], y[80:], k=10)
    assert res == {"top1": 1.0, "top5": None}  # 4 classes: top-5 would always be a hit, so it is not reported


def test_top5_is_reported_above_five_classes(clusters):
    x, y = clusters(20, 8)
    res = knn_accuracy(x[:120], y[:120], x[120:], y[120:], k=10)
    assert res["top1"] == 1.0 and res["top5"] == 1.0


def test_shuffled_labels_give_chance(clusters):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 8, generator=g)
    y = torch.randint(0, 4, (3000,), generator=g)
    res = knn_accuracy(x[:2000], y[:2000], x[2000:], y[2000:], k=20)
    assert abs(res["top1"] - 0.25) < 0.05
    assert res["top5"] is None  # C = 4 <= 5: top-5 would be every class, always a hit


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_matches_slow_reference(leave_one_out):
    g = torch.Generator().manual_seed(2)
    train = torch.randn(60, 5, generator=g)
    train_y = torch.randint(0, 3, (60,), generator=g)
    if leave_one_out:
        test, test_y = train, train_y
    else:
        test = torch.randn(25, 5, generator=g)
        test_y = torch.randint(0, 3, (25,), generator=g)
    for k in (1, 7):
        fast = knn_accuracy(train, train_y, test, test_y, k=k, temperature=0.2, leave_one_out=leave_one_out)
        slow = _slow_knn_top1(train, train_y, test, test_y, k, 0.2, 3, leave_one_out)
        assert fast["top1"] == pytest.approx(slow)


def test_chunked_equals_unchunked():
    g = torch.Generator().manual_seed(3)
    train, train_y = torch.randn(200, 6, generator=g), torch.randint(0, 10, (200,), generator=g)
    test, test_y = torch.randn(57, 6, generator=g), torch.randint(0, 10, (57,), generator=g)
    a = knn_accuracy(train, train_y, test, test_y, k=15, chunk_size=4)
    b = knn_accuracy(train, train_y, test, test_y, k=15, chunk_size=10_000)
    assert a == b


def test_leave_one_out_excludes_self():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(400, 8, generator=g), torch.randint(0, 4, (400,), generator=g)
    assert knn_accuracy(x, y, x, y, k=1)["top1"] == 1.0  # each point finds itself
    assert knn_accuracy(x, y, x, y, k=1, leave_one_out=True)["top1"] < 0.4


def test_k_clipped_and_small_temperature_is_finite(clusters):
    x, y = clusters(5, 2)
    res = knn_accuracy(x, y, x, y, k=10_000, temperature=1e-4, leave_one_out=True)
    assert res["top1"] == 1.0


def test_validation_errors():
    x, y = torch.randn(10, 4), torch.randint(0, 2, (10,))
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        knn_accuracy(x, y, x, y, k=0)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        knn_accuracy(x, y, x, y, temperature=0.0)
    with pytest.raises(ValueError, match=r"train_labels has shape \(9,\) but train_feats has N=10"):
        knn_accuracy(x, y[:9], x, y)
    with pytest.raises(ValueError, match="F=4 but test_feats has F=3"):
        knn_accuracy(x, y, x[:, :3], y)
    bad = x.clone()
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match="test_feats has non-finite values"):
        knn_accuracy(x, y, bad, y)
    with pytest.raises(ValueError, match="num_classes=1 but"):
        knn_accuracy(x, y, x, y, num_classes=1)
    with pytest.raises(TypeError, match="integer class indices"):
        knn_accuracy(x, y.float(), x, y)
    with pytest.raises(ValueError, match="leave_one_out=True needs test_feats to be train_feats"):
        knn_accuracy(x, y, x[:5], y[:5], leave_one_out=True)


def test_device_argument(clusters):
    x, y = clusters(10, 3)
    assert knn_accuracy(x, y, x, y, k=3, device="cpu") == knn_accuracy(x, y, x, y, k=3)
    with pytest.raises(ValueError, match="not a valid torch device"):
        knn_accuracy(x, y, x, y, device="gpu0")
