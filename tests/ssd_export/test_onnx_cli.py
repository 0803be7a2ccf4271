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
    from ssd_export.onnx_export import export_onnx
    from ssd_runtime.onnx_model import VARIANTS

    parser = build_parser()
    onnx_args = parser.parse_args(["onnx", "--checkpoint", "c.pt", "-o", "m.onnx"])
    signature = export_onnx.__kwdefaults__
    for flag in ("variant", "opset", "exporter", "max_candidates"):
        assert getattr(onnx_args, flag) == signature[flag], flag
    actions = {a.dest: a for a in parser._subparsers._group_actions[0].choices["onnx"]._actions}
    assert tuple(actions["variant"].choices) == VARIANTS
    assert tuple(actions["exporter"].choices) == defaults.EXPORTERS
    verify_help = parser._subparsers._group_actions[0].choices["verify"].format_help()
    assert f"default {defaults.DEFAULT_VERIFY_BATCH}" in verify_help
