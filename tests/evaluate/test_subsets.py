import numpy as np
import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from contrastkit.evaluate import class_balanced_subset, dataset_labels


def _labels():
    counts = {0: 100, 1: 50, 2: 7, 3: 1, 4: 25}
    y = torch.cat([torch.full((n,), c) for c, n in counts.items()])
    return y[torch.randperm(y.numel(), generator=torch.Generator().manual_seed(0))], counts


def test_sizes_per_class():
    y, counts = _labels()
    idx = class_balanced_subset(y, 0.1)
    picked = torch.bincount(y[idx], minlength=5).tolist()
    # round half up, at least one: 10, 5, 0.7 -> 1, 0.1 -> 1, 2.5 -> 3
    assert picked == [10, 5, 1, 1, 3]
    assert idx.dtype == torch.long
    assert torch.equal(idx, torch.sort(idx).values) and idx.unique().numel() == idx.numel()


def test_fraction_one_keeps_everything():
    y, _ = _labels()
    assert torch.equal(class_balanced_subset(y, 1.0), torch.arange(y.numel()))


def test_seeded():
    y, _ = _labels()
    a = class_balanced_subset(y, 0.2, seed=3)
    b = class_balanced_subset(y.numpy(), 0.2, seed=3)
    c = class_balanced_subset(y.tolist(), 0.2, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.numel() == c.numel()


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        class_balanced_subset(torch.arange(4), fraction)


def test_bad_labels():
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\)"):
        class_balanced_subset(torch.zeros(2, 2, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match="integer class indices"):
        class_balanced_subset(np.zeros(4), 0.5)
    with pytest.raises(ValueError, match="labels is empty"):
        class_balanced_subset(torch.zeros(0, dtype=torch.long), 0.5)


def test_dataset_labels():
    ds = TensorDataset(torch.zeros(6, 1), torch.tensor([2, 0, 1, 1, 0, 2]))
    assert torch.equal(dataset_labels(ds), torch.tensor([2, 0, 1, 1, 0, 2]))
    assert torch.equal(dataset_labels(Subset(ds, [5, 1])), torch.tensor([2, 0]))

    class WithTargets(torch.utils.data.Dataset):
        targets = [3, 1, 2]

        def __len__(self):
            return 3

        def __getitem__(self, i):
            raise AssertionError("images must not be decoded")

    assert torch.equal(dataset_labels(Subset(WithTargets(), [2, 0])), torch.tensor([2, 3]))
