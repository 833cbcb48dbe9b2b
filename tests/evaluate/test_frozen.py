"""evaluate/frozen.py: the frozen-feature protocols on the features of a split, small splits included."""
import pytest
import torch

from contrastkit.evaluate.frozen import score_features


def _split(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    features = torch.randn(n, 4, generator=g) + 3.0 * labels[:, None].float()  # two separated classes
    return features, labels


@pytest.mark.parametrize("n_test, ks", [(3, [1, 2]), (5, [1, 2, 4]), (8, [1, 2, 4]), (9, [1, 2, 4, 8])])
def test_retrieval_on_a_small_test_split_uses_the_ks_it_has(n_test, ks):
    metrics, recipe = score_features("retrieval", _split(10), _split(n_test, seed=1))
    assert recipe["ks"] == ks
    assert sorted(k for k in metrics if k.startswith("recall@")) == sorted(f"recall@{k}" for k in ks)
    assert all(0.0 <= metrics[f"recall@{k}"] <= 1.0 for k in ks)


def test_retrieval_needs_two_test_images():
    with pytest.raises(ValueError, match="at least 2 test images, got 1"):
        score_features("retrieval", _split(10), _split(1))
