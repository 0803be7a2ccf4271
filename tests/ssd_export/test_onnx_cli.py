"""``ssd-export onnx`` and ``ssd-export verify``: exit codes, JSON report, choices and defaults from the library."""
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


def test_cli_end2end_with_the_evaluation_settings_is_evaluated_by_the_runtime(runtime_checkpoint, voc_root, tmp_path,
                                                                               capsys):
    from ssd_runtime.cli import main as runtime_main
    from ssd_runtime.evaluate import compare_map
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
    assert report["runtime"]["map"] == compare_map(runtime_checkpoint, voc_root)["runtime"]["map"]
