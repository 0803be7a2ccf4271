import json

import pytest

from ssd_train.cli import _fit_config, build_parser, main
from ssd_train.config import AMP_MODES, DEVICES, HEAD_INITS, OPTIMIZERS, SCHEDULES, TrainConfig


def test_check_runs_the_model_once(capsys):
    assert main(["check", "--width", "0.125", "--batch", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["locs"] == [2, 8732, 4] and report["class_logits"] == [2, 8732, 21]
    assert report["finite"] is True


def test_missing_vgg_weights_is_a_clean_error(capsys, tmp_path):
    assert main(["check", "--vgg-weights", str(tmp_path / "vgg16.pth")]) == 2
    assert "VGG-16 weights file not found" in capsys.readouterr().err


def fit_args(*flags: str):
    return build_parser().parse_args(["fit", "--data", "d", "--out", "o", *flags])


def test_fit_recipe_is_the_python_recipe_and_flags_override_it():
    assert _fit_config(fit_args("--recipe", "cpu-quick")) == TrainConfig.from_recipe("cpu-quick", data=["d"], out="o")
    assert _fit_config(fit_args()) == TrainConfig(data=["d"], out="o")
    config = _fit_config(fit_args("--recipe", "cpu-quick", "--width", "0.0625", "--optimizer", "sgd", "--no-progress"))
    assert config == TrainConfig.from_recipe("cpu-quick", data=["d"], out="o", width=0.0625, optimizer="sgd",
                                             progress=False)


def test_fit_on_cuda_defaults_to_channels_last():
    assert _fit_config(fit_args("--device", "cuda")).channels_last is True
    assert _fit_config(fit_args("--device", "cuda", "--recipe", "cpu-quick")).channels_last is True
    assert _fit_config(fit_args()).channels_last is False


@pytest.mark.parametrize("flag, allowed", [("--optimizer", OPTIMIZERS), ("--schedule", SCHEDULES),
                                           ("--amp", AMP_MODES), ("--head-init", HEAD_INITS), ("--device", DEVICES)])
def test_fit_choices_are_the_library_constants(flag, allowed):
    fit_parser = build_parser()._subparsers._group_actions[0].choices["fit"]
    action = next(a for a in fit_parser._actions if flag in a.option_strings)
    assert tuple(action.choices) == allowed
