import pytest
import torch

from contrastkit.evaluate import WEIGHT_DECAY_GRID, linear_eval, standardize_features


def test_separable_gives_one(clusters):
    x, y = clusters(40, 5)
    res = linear_eval(x[:150], y[:150], x[150:], y[150:], epochs=10, batch_size=32)
    assert res["top1"] == 1.0 and res["top5"] is None  # 5 classes: top-5 is every class, not reported
    many = clusters(20, 8)
    res8 = linear_eval(many[0][:120], many[1][:120], many[0][120:], many[1][120:], epochs=10, batch_size=32)
    assert res8["top1"] == 1.0 and res8["top5"] == 1.0
    recipe = res["recipe"]
    assert recipe["lr"] == pytest.approx(0.1 * 32 / 256)
    assert recipe["weight_decay"] == 0.0 and recipe["n_train"] == 150 and recipe["num_classes"] == 5


def test_shuffled_labels_give_chance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1200, 16, generator=g)
    y = torch.randint(0, 4, (1200,), generator=g)
    res = linear_eval(x[:800], y[:800], x[800:], y[800:], epochs=5)
    assert abs(res["top1"] - 0.25) < 0.07


def test_reproducible_same_seed():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 8, generator=g)
    y = torch.randint(0, 3, (300,), generator=g)
    before = torch.random.get_rng_state()
    a = linear_eval(x[:200], y[:200], x[200:], y[200:], epochs=3, batch_size=16, seed=5)
    b = linear_eval(x[:200], y[:200], x[200:], y[200:], epochs=3, batch_size=16, seed=5)
    assert a == b
    assert torch.equal(before, torch.random.get_rng_state())  # global RNG untouched


def test_standardisation_makes_scale_irrelevant(clusters):
    x, y = clusters(30, 3, noise=0.5)
    a = linear_eval(x[:60], y[:60], x[60:], y[60:], epochs=5)
    b = linear_eval(1e4 * x[:60], y[:60], 1e4 * x[60:], y[60:], epochs=5)
    assert a["top1"] == pytest.approx(b["top1"], abs=1 / 30)


def test_standardize_features_uses_train_statistics():
    train = torch.tensor([[0.0, 5.0], [2.0, 5.0]])
    test = torch.tensor([[1.0, 6.0]])
    tr, te = standardize_features(train, test)
    torch.testing.assert_close(tr, torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(te, torch.tensor([[0.0, 1.0]]))  # constant dimension only centred


def test_weight_decay_grid_selected_on_held_out_split(clusters):
    x, y = clusters(30, 3, noise=0.3)
    res = linear_eval(x[:60], y[:60], x[60:], y[60:], epochs=3, weight_decay=WEIGHT_DECAY_GRID)
    recipe = res["recipe"]
    assert recipe["weight_decay"] in WEIGHT_DECAY_GRID
    assert [r["weight_decay"] for r in recipe["val_top1"]] == list(WEIGHT_DECAY_GRID)
    assert recipe["val_fraction"] == 0.1


def test_validation_errors():
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        linear_eval(x, y, x, y, epochs=0)
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        linear_eval(x, y, x, y, lr=-1.0)
    with pytest.raises(ValueError, match="weight_decay must be finite and >= 0"):
        linear_eval(x, y, x, y, weight_decay=-0.1)
    with pytest.raises(TypeError, match="weight_decay must be a number"):
        linear_eval(x, y, x, y, weight_decay=[])
    with pytest.raises(ValueError, match=r"test_labels has shape \(19,\) but test_feats has N=20"):
        linear_eval(x, y, x, y[:19])
    with pytest.raises(ValueError, match="non-finite"):
        linear_eval(x * float("nan"), y, x, y)
    with pytest.raises(RuntimeError, match="diverged: loss is .* at step"):
        linear_eval(1e3 * torch.randn(20, 4), y, x, y, lr=1e38, standardize=False)
