"""TrainConfig: named recipes (``from_recipe``), field defaults, validation of the option fields."""
import dataclasses

import pytest

from ssd_train.config import DEFAULT_RECIPE, RECIPE_NAMES, RECIPES, TrainConfig


def test_every_recipe_sets_known_fields_to_valid_values():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert DEFAULT_RECIPE in RECIPE_NAMES and RECIPES[DEFAULT_RECIPE] == {}
    for name in RECIPE_NAMES:
        assert set(RECIPES[name]) <= fields - {"data", "out"}, name
        TrainConfig.from_recipe(name, data=["x"], out="y")  # validates


def test_from_recipe_applies_the_recipe_then_the_overrides():
    quick = TrainConfig.from_recipe("cpu-quick", data="x", out="y")
    assert quick == TrainConfig(data=["x"], out="y", **RECIPES["cpu-quick"])
    assert quick.optimizer == "adamw" and quick.width == 0.125 and quick.data == ["x"]
    assert TrainConfig.from_recipe("cpu-quick", data="x", out="y", width=0.0625, optimizer="sgd").width == 0.0625
    assert TrainConfig.from_recipe("reference", data="x", out="y") == TrainConfig(data="x", out="y")
    with pytest.raises(ValueError, match="recipe must be one of"):
        TrainConfig.from_recipe("gpu-slow", data="x", out="y")


def test_defaults_are_the_dataclass_defaults():
    config = TrainConfig(data="x", out="y")
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("data", "out"):
            assert TrainConfig.default(f.name) == getattr(config, f.name), f.name
    assert TrainConfig.default("lr_steps") is not TrainConfig.default("lr_steps")  # a fresh list each time
    with pytest.raises(ValueError, match="no default"):
        TrainConfig.default("data")


@pytest.mark.parametrize("name", ["prior_clip", "loc_loss", "amp", "schedule"])
def test_option_fields_are_validated(name):
    with pytest.raises(ValueError, match=f"{name} must be one of"):
        TrainConfig(data="x", out="y", **{name: "other"})
