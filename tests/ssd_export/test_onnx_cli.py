"""``ssd-export onnx`` and ``ssd-export verify``: exit codes, JSON report, choices and defaults from the library;
the engine's rebuild command read back by ``ssd-export engine``'s parser."""
from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort

from ssd_export.cli import main


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_cli_onnx_and_verify(fp32_dynamic, runtime_checkpoint: Path, tmp_path: Path, capsys):
    assert main(["verify", "--model", str(fp32_dynamic.output), "--checkpoint", str(runtime_checkpoint),
                 "--batch", "2", "--json", "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["batch_size"] == 3  # 2 is the traced batch size: moved off it
    assert json.loads((tmp_path / "r.json").read_text())["passed"]
    out = tmp_path / "cli.onnx"
    assert main(["onnx", "--checkpoint", str(runtime_checkpoint), "-o", str(out), "--static-batch", "2",
                 "--no-verify"]) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()
    assert _session(out).get_inputs()[0].shape[0] == 2
    assert main(["onnx", "--checkpoint", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()


def test_cli_choices_and_defaults_come_from_the_library():
    from ssd_export import defaults
    from ssd_export.cli import build_parser
    from ssd_export.onnx.export import export_onnx
    from ssd_runtime.onnx_model import VARIANTS

    parser = build_parser()
    onnx_args = parser.parse_args(["onnx", "--checkpoint", "c.pt", "-o", "m.onnx"])
    signature = export_onnx.__kwdefaults__
    for flag in ("variant", "opset", "exporter", "max_candidates", "end2end_settings"):
        assert getattr(onnx_args, flag) == signature[flag], flag
    actions = {a.dest: a for a in parser._subparsers._group_actions[0].choices["onnx"]._actions}
    assert tuple(actions["variant"].choices) == VARIANTS
    assert tuple(actions["exporter"].choices) == defaults.EXPORTERS
    assert tuple(actions["end2end_settings"].choices) == defaults.END2END_SETTINGS
    verify_help = parser._subparsers._group_actions[0].choices["verify"].format_help()
    assert f"default {defaults.DEFAULT_VERIFY_BATCH}" in verify_help
    # the other commands' defaults are their API's (signatures), read once
    from ssd_export.deploy.run import deploy
    from ssd_export.tensorrt.engine import build_engine
    from ssd_export.triton.repository import write_triton_repository
    from ssd_runtime.options import default_of

    deploy_args = parser.parse_args(["deploy", "--model", "c.pt", "--data", "d", "--out", "o"])
    for name in ("artifacts", "engines", "calibration_images", "bench_batches", "bench_warmup", "bench_iterations",
                 "draw_images", "max_images"):
        expected = default_of(deploy, name)
        assert getattr(deploy_args, name) == (list(expected) if isinstance(expected, tuple) else expected), name
    engine_args = parser.parse_args(["engine", "--model", "m.onnx", "-o", "m.engine"])
    for name in ("batch", "fp16", "tf32", "device", "workspace", "hardware_compatibility", "optimization_level"):
        assert getattr(engine_args, name) == default_of(build_engine, name), name
    triton_args = parser.parse_args(["triton", "--model", "m.onnx", "--out", "r"])
    for name in ("name", "max_batch", "max_queue_delay_us", "instances", "postprocess_instances"):
        assert getattr(triton_args, name) == default_of(write_triton_repository, name), name


def test_cli_end2end_with_the_evaluation_settings_is_evaluated_by_the_runtime(runtime_checkpoint, voc_root, tmp_path,
                                                                               capsys):
    from ssd_runtime.cli import main as runtime_main
    from ssd_runtime.evaluate import map_report_of_model_file
    from ssd_runtime.onnx_model import read_onnx_info

    out = tmp_path / "e2e.onnx"
    assert main(["onnx", "--checkpoint", str(runtime_checkpoint), "-o", str(out), "--variant", "end2end",
                 "--end2end-settings", "evaluation"]) == 0
    capsys.readouterr()
    info = read_onnx_info(out)
    assert info.end2end.settings == info.spec.evaluation
    # the graph's NMS at the evaluation settings gives the NumPy postprocess's mAP
    assert runtime_main(["eval", "--model", str(out), "--data", str(voc_root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runtime"]["map"] == map_report_of_model_file(runtime_checkpoint, voc_root)["runtime"]["map"]


def test_the_engine_rebuild_command_parses_back_to_its_settings(capsys):
    """The sidecar's rebuild command is written from the records the ``ssd-export engine`` parser is built
    from: the real parser reads it back to the settings it was written from, defaults left out."""
    from ssd_export.cli import build_parser
    from ssd_export.options import ENGINE_OPTIONS
    from ssd_export.tensorrt.engine import build_engine, default_tf32, rebuild_command

    every = dict(onnx_path=Path("a b.onnx"), engine_path=Path("out/m.engine"), checkpoint=Path("c.pt"), batch=(1, 2, 4),
                 fp16=True, workspace=3 << 20, timing_cache=Path("t.cache"), version_compatible=True,
                 hardware_compatibility="ampere_plus", optimization_level=2, tf32=True, device=1)
    least = dict(onnx_path=Path("m.onnx"), engine_path=Path("m.engine"), checkpoint=None, batch=None, fp16=False,
                 workspace=None, timing_cache=None, version_compatible=False, hardware_compatibility="none",
                 optimization_level=None, tf32=None, device=0)
    parser = build_parser()
    for settings, precision in ((every, "fp32"), (least, "fp32"), ({**least, "tf32": False}, "fp16")):
        argv = rebuild_command(**settings, precision=precision)
        assert argv[:2] == ["ssd-export", "engine"]
        args = parser.parse_args(argv[1:])  # without the program name
        assert capsys.readouterr().err == ""  # written in the current spellings
        parsed = {option.dest: getattr(args, option.dest) for option in ENGINE_OPTIONS}
        # tf32 at its precision's default is left out (None: the same engine)
        expected = {**settings, "tf32": None if settings["tf32"] == default_tf32(precision) else settings["tf32"]}
        assert parsed == expected
    assert rebuild_command(**least, precision="fp32") == ["ssd-export", "engine", "--model", "m.onnx", "--output", "m.engine"]
    # every option of the table is a build_engine parameter, so the CLI passes them straight on
    import inspect

    assert {o.dest for o in ENGINE_OPTIONS} <= set(inspect.signature(build_engine).parameters)
