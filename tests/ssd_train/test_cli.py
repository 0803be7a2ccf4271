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


def _subparser(parser, name: str):
    return parser._subparsers._group_actions[0].choices[name]


def _flags(parser) -> dict[str, tuple]:
    """Each option of a parser by its flags: (dest, default, choices, nargs, required, help)."""
    return {tuple(a.option_strings): (a.dest, a.default, a.choices, a.nargs,
                                      a.required or getattr(a, "required_any_spelling", False), a.help)
            for a in parser._actions if a.option_strings}


def test_detect_is_the_runtime_detect_with_a_deprecation_note(capsys, tmp_path):
    from ssd_runtime import cli as runtime_cli

    train, runtime = _subparser(build_parser(), "detect"), _subparser(runtime_cli.build_parser(), "detect")
    assert _flags(train) == {**_flags(runtime), ("--checkpoint",): _flags(train)[("--checkpoint",)]}
    assert train.get_default("func").keywords["run"] is runtime.get_default("func")  # the runtime's own code
    missing = tmp_path / "missing.pt"
    assert main(["detect", "--model", str(missing), "x.jpg"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "ssd-train detect is deprecated and goes in the next release: use ssd-runtime detect (the same flags)"
    assert err[1].startswith("ssd-train detect: error: model not found") and len(err) == 2


def test_eval_takes_the_runtime_evals_flags_for_the_shared_ideas():
    from ssd_runtime.cli import build_parser as runtime_parser

    train, runtime = _flags(_subparser(build_parser(), "eval")), _flags(_subparser(runtime_parser(), "eval"))
    shared = ["--model", "--device", "--data", "--split", "--batch-size", "--max-images", "--ap-method",
              "--skip-unknown-classes", "--detections-out", "--resume", "--shard", "--json"]
    assert all((flag,) in train and (flag,) in runtime for flag in shared)
    for flag in ("--split", "--max-images", "--ap-method", "--skip-unknown-classes", "--detections-out", "--resume",
                 "--shard", "--json"):
        assert train[(flag,)] == runtime[(flag,)], flag  # the same definition, default included


def test_eval_metric_gives_ssd_runtime_evals_coco_metrics(runtime_checkpoint, voc_root, tmp_path, capsys):
    from ssd_runtime.convert import convert_dataset
    from ssd_runtime.evaluate import map_report_of_model_file

    coco = tmp_path / "coco"
    convert_dataset(voc_root, coco, "coco", images="link")  # the same images, COCO's annotations
    expected = map_report_of_model_file(runtime_checkpoint, coco, metric="coco")  # ssd-runtime eval's report
    assert main(["eval", "--model", str(runtime_checkpoint), "--data", str(coco), "--json"]) == 0  # auto: coco
    report = json.loads(capsys.readouterr().out)
    assert report["metric"] == "coco" and report["map"] == expected["runtime"]["map"]
    assert report["coco"]["stats"] == expected["coco"]["stats"] and report["coco"]["images"] == 8
    out = tmp_path / "dets.json"  # the detections-file path: COCO's metrics of the file's detections
    assert main(["eval", "--model", str(runtime_checkpoint), "--data", str(coco), "--detections-out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["coco"]["stats"] == expected["coco"]["stats"]
    assert main(["eval", "--model", str(runtime_checkpoint), "--data", str(coco), "--metric", "voc", "--json"]) == 0
    voc = json.loads(capsys.readouterr().out)
    assert voc["metric"] == "voc" and voc["coco"] is None and voc["map"] == report["map"]
    assert main(["eval", "--model", str(runtime_checkpoint), "--data", str(voc_root), "--metric", "coco"]) == 0
    assert "COCO metrics (faster-coco-eval, 8 images):" in capsys.readouterr().out  # VOC data, COCO's metrics asked
