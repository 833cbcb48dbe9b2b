"""Named recipes (contrastkit.recipes): each is a valid configuration, and the CPU budget recipe of issue 27 runs
end to end with the CPU's automatic precision."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import make_image_folder
from contrastkit.config import PretrainConfig
from contrastkit.recipes import RECIPES, get_recipe
from contrastkit.train import pretrain
from contrastkit.train.precision import resolve_precision


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_a_valid_config(name, tmp_path):
    cfg = PretrainConfig(**get_recipe(name), data=str(tmp_path), time_budget_s=60.0)
    cfg.validate()
    assert cfg.knn_every == 0  # a budget run spends its seconds on training; the monitor is asked for separately


def test_get_recipe_gives_a_copy_and_names_the_known_ones():
    get_recipe("cifar-budget-2")["lr"] = 99.0
    assert RECIPES["cifar-budget-2"]["lr"] != 99.0
    with pytest.raises(ValueError, match="unknown recipe 'nope'; known recipes: cifar-budget, cifar-budget-2, "
                                         "cifar-budget-3, cifar-budget-4, cifar-budget-5, "
                                         "cifar-budget-6"):
        get_recipe("nope")


def test_the_cpu_budget_recipes_and_their_precision(tmp_path):
    """cifar-budget-2 trains with the CPU's automatic precision; cifar-budget stays fp32, as measured;
    cifar-budget-3 is cifar-budget-2 with a resolution schedule and half the learning rate, and runs end to end;
    cifar-budget-4 is cifar-budget-3 with batches of 128, cifar-budget-5 that with 24-px views to the end but for a
    few 32-px steps, cifar-budget-6 that without them."""
    folder = make_image_folder(tmp_path / "data", per_class=8, size=32)
    recipe = get_recipe("cifar-budget-2")
    assert recipe["precision"] == "auto" and recipe["schedule"] == "time" and get_recipe("cifar-budget")[
        "precision"] == "fp32"
    assert {k: v for k, v in recipe.items() if k != "precision"} == {
        k: v for k, v in get_recipe("cifar-budget").items() if k != "precision"}
    third = get_recipe("cifar-budget-3")
    assert third.pop("size_schedule") == "16:0.5,24:0.8" and third.pop("lr") == recipe.pop("lr") / 2
    assert third == recipe  # nothing else differs
    fourth, third = get_recipe("cifar-budget-4"), get_recipe("cifar-budget-3")
    assert fourth.pop("batch_size") == 2 * third.pop("batch_size") == 128 and fourth == third
    fifth, fourth = get_recipe("cifar-budget-5"), get_recipe("cifar-budget-4")
    assert fifth.pop("size_schedule") == "16:0.5,24:0.999" and fourth.pop("size_schedule") != "16:0.5,24:0.999"
    assert fifth == fourth
    sixth, fifth = get_recipe("cifar-budget-6"), get_recipe("cifar-budget-5")
    assert sixth.pop("size_schedule") == "16:0.5,24:1" and fifth.pop("size_schedule") == "16:0.5,24:0.999"
    assert sixth == fifth
    cfg = PretrainConfig(**dict(get_recipe("cifar-budget-3"), batch_size=8), data=str(folder),
                         out=str(tmp_path / "run"), time_budget_s=600.0, max_steps=3, num_workers=0, progress=False,
                         device="cpu")
    summary = pretrain(cfg)
    assert summary["global_step"] == 3 and summary["stop_reason"] == "max_steps"
    assert summary["precision"] == resolve_precision(torch.device("cpu"), "auto")
    assert summary["augment_on"] == "device"
    with pytest.raises(ValueError, match="needs the batched augmentation"):
        dataclasses.replace(cfg, augment_on="workers").validate()
