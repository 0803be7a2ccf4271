"""The deploy report from step results (no model): deltas, verdicts, failures, the markdown, the figures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssd_export.deploy.steps import Artifact, thin_curve
from ssd_export.deploy.report import (
    REPORT_SCHEMA,
    build_report,
    machine_info,
    render_markdown,
    versions,
    write_deploy_report,
)
from ssd_runtime.bench import STAGES
from ssd_runtime.evaluate import TARGET_POINTS

CLASSES = ["circle", "square"]


def _evaluation(tmp: Path, name: str, aps: list[float]) -> dict:
    curves = tmp / "eval" / f"{name}.json"
    curves.parent.mkdir(parents=True, exist_ok=True)
    curves.write_text(json.dumps({"map": sum(aps) / len(aps), "ap": dict(zip(CLASSES, aps)),
                                  "curves": {c: {"precision": [1.0, 0.5], "recall": [0.2, 0.6]} for c in CLASSES}}))
    return {"map": sum(aps) / len(aps), "classes": [{"name": c, "ap": ap} for c, ap in zip(CLASSES, aps)],
            "images": 4, "seconds": 1.0, "images_per_s": 4.0, "ap_method": "11point",
            "settings": {"min_score": 0.01, "max_overlap": 0.45, "top_k": 200}, "curves": str(curves),
            "reused": False, "finished_at": "2026-01-01T00:00:00Z"}


def _bench(ms: float) -> dict:
    stage = {"p50_ms": ms, "p90_ms": ms * 1.1, "p99_ms": ms * 1.2, "images_per_s": 1000 / ms}
    return {"backend": "OrtBackend", "device": "cpu", "postprocess": "numpy", "warmup": 1, "iterations": 2,
            "settings": {"min_score": 0.2, "max_overlap": 0.45, "top_k": 200}, "image_size": [500, 375],
            "results": [{"batch_size": 1, "stages": {s: dict(stage) for s in STAGES}}],
            "reused": True, "finished_at": "2026-01-01T00:00:01Z"}


def _build(verified: bool | None = True) -> dict:
    return {"seconds": 2.0, "sha256": "ab" * 32, "size_bytes": 2_000_000, "reused": False,
            "finished_at": "2026-01-01T00:00:00Z", "verification": {"passed": verified, "failures": []}}


@pytest.fixture
def report_parts(tmp_path):
    plan = [Artifact("pytorch", "checkpoint", "fp32", "fp32", tmp_path / "m.pt"),
            Artifact("fp32", "onnx", "fp32", "fp32", tmp_path / "ssd300_fp32.onnx"),
            Artifact("int8", "onnx", "int8", "int8", tmp_path / "ssd300_int8.onnx", "fp32"),
            Artifact("fp16", "onnx", "fp16", "fp16", tmp_path / "ssd300_fp16.onnx")]
    results = {
        "pytorch": {"status": "ok", "steps": {"evaluate": _evaluation(tmp_path, "pytorch", [0.6, 0.4]),
                                              "bench": _bench(20.0)}},
        "fp32": {"status": "ok", "steps": {"build": _build(), "evaluate": _evaluation(tmp_path, "fp32", [0.6, 0.4]),
                                           "bench": _bench(10.0)}},
        # 0.59 / 0.405: mAP 0.4975, -0.25 points: outside fp32's target, inside int8's
        "int8": {"status": "ok", "steps": {"build": _build(None), "evaluate": _evaluation(tmp_path, "int8", [0.59, 0.405])}},
        "fp16": {"status": "failed", "error": "build: RuntimeError: boom", "steps": {}},
    }
    meta = {"targets": dict(TARGET_POINTS), "checkpoint": str(tmp_path / "m.pt"), "checkpoint_sha256": "cd" * 32,
            "data": "data", "split": "test", "images": 4, "data_sha256": "ef" * 32, "out": str(tmp_path),
            "engines": {"mode": "auto", "built": False, "reason": "no TensorRT here"}, "calibration": None,
            "command": ["ssd-export", "deploy"], "seconds": 3.0}
    return plan, results, meta


def test_deltas_targets_and_failures(report_parts):
    plan, results, meta = report_parts
    report = build_report(plan, results, meta)
    rows = {r["name"]: r for r in report["artifacts"]}
    assert report["schema_version"] == REPORT_SCHEMA and report["reference"]["map"] == pytest.approx(0.5)
    assert rows["fp32"]["delta_points"] == 0.0 and rows["fp32"]["within_target"] is True
    assert rows["int8"]["delta_points"] == pytest.approx(-0.25) and rows["int8"]["within_target"] is True
    assert rows["int8"]["target_points"] == TARGET_POINTS["int8"]
    assert rows["pytorch"]["delta_points"] is None and rows["pytorch"]["target_points"] is None
    assert rows["fp16"]["status"] == "failed" and rows["fp16"]["map"] is None
    assert report["worst"] == "int8" and report["passed"] is False
    assert report["failures"] == ["fp16: failed (build: RuntimeError: boom)"]
    # the same int8 model judged as fp32 would miss its target
    meta["targets"]["int8"] = 0.05
    assert build_report(plan, results, meta)["failures"] == [
        "int8: |delta mAP| 0.250 points, over its int8 target of 0.05", "fp16: failed (build: RuntimeError: boom)"]


def test_markdown_has_the_tables_the_engine_line_and_the_problems(report_parts):
    report = build_report(*report_parts)
    report["figures"] = {"pr_curves": "figures/pr_curves.png", "latency": None, "detections": None}
    text = render_markdown(report)
    assert text.startswith("# Deployment report\n\nFAILED: 1 problem(s)")
    # these evaluations recorded no matches file: no interval, and the report says why
    assert "| fp32 | onnxruntime | fp32 | 0.5000 | +0.000 | n/a | <= 0.05 | pass | yes | no |" in text
    assert "| int8 | onnxruntime | int8 | 0.4975 | -0.250 | n/a | <= 0.5 | pass | - | no |" in text
    assert "| fp16 | onnxruntime | fp16 | n/a | n/a | n/a | <= 0.1 | **FAILED** | - | no |" in text
    assert "| pytorch | torch | fp32 |" in text
    assert "- int8: no interval (MatchesFileError: no matches file recorded by the evaluation)" in text
    assert "- TensorRT engines: skipped: no TensorRT here" in text
    assert "## Per-class AP of the artifact furthest from PyTorch: int8" in text
    assert "| circle | 0.5900 | 0.6000 | -1.000 | n/a |" in text
    assert "| fp32 | OrtBackend (cpu) | 1 | 10.00 | 10.00 | 10.00 | 10.00 | 11.00 | 12.00 | 100.0 |" in text
    assert "![Precision-recall per class](figures/pr_curves.png)" in text and "Latency per stage" not in text
    assert text.rstrip().endswith("- fp16: failed (build: RuntimeError: boom)")


def test_a_second_runtime_has_its_own_row_beside_onnxruntime(report_parts, tmp_path):
    """An OpenVINO row reads the int8 row's file: its own mAP, runtime column and options; the file listed once."""
    plan, results, meta = report_parts
    plan.insert(3, Artifact("openvino-int8", "onnx", "int8", "int8", tmp_path / "ssd300_int8.onnx", "int8",
                            runtime="openvino"))
    options = {"variant": "int8", "inference_precision": "f32", "intra_op_threads": 2}
    verify = {"seconds": 1.0, "reused": False, "finished_at": "2026-01-01T00:00:02Z",
              "verification": {"passed": True, "failures": [], "report": None, "checks": {}}}
    # 0.6 / 0.4: mAP 0.5, as PyTorch's: the fusing reader's INT8 mAP beside ONNX Runtime's 0.4975
    results["openvino-int8"] = {"status": "ok", "steps": {
        "verify": verify, "evaluate": {**_evaluation(tmp_path, "openvino-int8", [0.6, 0.4]), "backend_options": options},
        "bench": {**_bench(5.0), "backend": "OpenVinoBackend", "options": options}}}
    meta["runtimes"] = {"used": ["onnxruntime", "openvino"], "default": False, "left_out": {}}
    report = build_report(plan, results, meta)
    rows = {r["name"]: r for r in report["artifacts"]}
    row = rows["openvino-int8"]
    assert (row["runtime"], row["reads_file_of"], row["verified"], row["runtime_options"]) == (
        "openvino", "int8", True, options)
    assert row["map"] == pytest.approx(0.5) and row["delta_points"] == pytest.approx(0.0)
    assert row["reused"] == {"verify": False, "evaluate": False, "bench": True}  # _bench says reused
    assert (rows["int8"]["runtime"], rows["int8"]["reads_file_of"], rows["pytorch"]["runtime"]) == (
        "onnxruntime", None, "torch")
    text = render_markdown(report)
    assert "| int8 | onnxruntime | int8 | 0.4975 | -0.250 |" in text
    assert "| openvino-int8 | openvino | int8 | 0.5000 | +0.000 | n/a | <= 0.5 | pass | yes | no |" in text
    assert "- ONNX runtimes: onnxruntime, openvino (asked for)" in text
    assert "- openvino options: inference_precision f32, intra_op_threads 2" in text
    assert "| openvino-int8 | OpenVinoBackend (cpu) | 1 | 5.00 |" in text
    files = text.split("## Files")[1]
    assert "| int8 | `ssd300_int8.onnx` |" in files and "openvino-int8" not in files  # one file, listed once
    # the default list, with the runtime left out and why
    meta["runtimes"] = {"used": ["onnxruntime"], "default": True, "left_out": {"openvino": "not installed (x)"}}
    text = render_markdown(build_report(plan, results, meta))
    assert "- ONNX runtimes: onnxruntime (the default: ONNX Runtime plus those installed)" in text
    assert "- openvino left out: not installed (x)" in text


def test_written_report_and_figures(report_parts, tmp_path):
    report = write_deploy_report(tmp_path, build_report(*report_parts))
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))
    assert (tmp_path / "report.md").read_text() == render_markdown(report)
    assert report["figures"]["detections"] is None  # nothing was drawn
    for key in ("pr_curves", "latency"):
        assert (tmp_path / report["figures"][key]).read_bytes()[:4] == b"\x89PNG"


def test_machine_and_versions():
    machine = machine_info()
    assert machine["cpu"] and machine["cores"] >= 1 and machine["platform"]
    assert set(versions()) == {"python", "ssd300-toolkit", "torch", "onnxruntime", "openvino", "onnx", "numpy",
                               "tensorrt"}


def test_thin_curve_keeps_the_ends():
    import numpy as np

    recall = np.linspace(0, 1, 10_001)
    precision = 1 - recall / 2
    p, r = thin_curve(precision, recall, points=50)
    assert len(r) == 50 and r[0] == 0.0 and r[-1] == 1.0 and p[-1] == 0.5
    assert thin_curve(precision[:3], recall[:3]) == ([1.0, 0.99995, 0.9999], [0.0, 0.0001, 0.0002])


def _evaluated(tmp: Path, name: str, detections: list, truths: list) -> dict:
    """An evaluate step's result from a real ``map_of_detections`` (its matches file written as the deploy does)."""
    from ssd_runtime.bootstrap import save_matches
    from ssd_runtime.metric import map_of_detections

    result = map_of_detections(detections, truths, ["background", *CLASSES])
    entry = _evaluation(tmp, name, [c.ap for c in result.classes])
    entry.update(map=result.map, matches=str(tmp / "eval" / f"{name}.matches.npz"))
    save_matches(entry["matches"], result.matches, "12" * 32)
    return entry


def test_intervals_from_the_matches_files(report_parts, tmp_path):
    import numpy as np

    from ssd_runtime.bootstrap import BootstrapSettings, load_matches, paired_bootstrap
    from tests.helpers.metric_cases import dets, random_set

    plan, results, meta = report_parts
    detections, truths = random_set(np.random.default_rng(0), 40, 3)
    # int8: the boxes of every third image moved off their objects
    worse = [dets(d.boxes + 2.0 * (i % 3 == 0), d.labels, d.scores) for i, d in enumerate(detections)]
    for name, found in (("pytorch", detections), ("fp32", detections), ("int8", worse)):
        results[name]["steps"]["evaluate"] = _evaluated(tmp_path, name, found, truths)
    settings = BootstrapSettings(resamples=200, seed=3)
    report = build_report(plan, results, meta, settings)
    rows = {r["name"]: r for r in report["artifacts"]}
    assert report["bootstrap"] == settings.to_dict()
    # identical detections: every paired difference is 0
    assert rows["fp32"]["delta_points_interval"] == [0.0, 0.0] and rows["fp32"]["interval_wider_than_target"] is False
    assert all(c["delta_points_interval"] == [0.0, 0.0] for c in rows["fp32"]["classes"])
    lo, hi = rows["int8"]["delta_points_interval"]
    assert lo < rows["int8"]["delta_points"] < hi < 0
    expected = paired_bootstrap(*(load_matches(results[n]["steps"]["evaluate"]["matches"])[0] for n in ("int8", "pytorch")),
                                settings)
    assert (lo, hi) == expected.map
    assert [c["delta_points_interval"] for c in rows["int8"]["classes"]] == [list(expected.classes[c]) for c in CLASSES]
    assert rows["int8"]["interval_wider_than_target"] is (hi - lo > 2 * TARGET_POINTS["int8"])
    # judged against a target narrower than half the interval: said in the table
    meta["targets"]["int8"] = (hi - lo) / 4
    report = build_report(plan, results, meta, settings)
    text = render_markdown(report)
    assert f"| [{lo:+.3f}, {hi:+.3f}] | <= {(hi - lo) / 4} | **FAIL** (interval wider than the target) |" in text
    assert "95% interval: where the delta would lie" in text and "200 resamples" in text and "seed 3" in text
    assert f"| {CLASSES[0]} |" in text and "[+0.000, +0.000]" in text
    # a damaged matches file costs that row's interval, not the report
    Path(results["int8"]["steps"]["evaluate"]["matches"]).write_bytes(b"damaged")
    row = {r["name"]: r for r in build_report(plan, results, meta, settings)["artifacts"]}["int8"]
    assert row["delta_points_interval"] is None and row["interval_error"].startswith("MatchesFileError")
    assert row["delta_points"] is not None


def test_the_annotated_video_section_and_its_failure(report_parts):
    plan, results, meta = report_parts
    stage = {"count": 4, "mean_ms": 5.0, "p50_ms": 4.0, "p90_ms": 6.0, "p99_ms": 7.0}
    meta["video"] = {"status": "ok", "artifact": "int8", "runtime": "onnxruntime", "reused": False,
                     "video": "/out/video/detections.mp4", "link": "video/detections.mp4", "frames": 4, "fps": 12.0,
                     "source": "the first 4 test images as a 500x376 H.264 clip at 12 fps", "device": "cpu",
                     "batch_size": 1, "throughput_fps": 30.04, "seconds": 1.25, "detections": [1, 0, 2, 3],
                     "settings": {"min_score": 0.2, "max_overlap": 0.45, "top_k": 200},
                     "latency": {**stage, "p50_ms": 120.0, "p90_ms": 150.0, "p99_ms": 161.0},
                     "stages": {"decode": stage, "infer": {**stage, "mean_ms": 25.0}, "sink": {**stage, "count": 0}}}
    report = build_report(plan, results, meta)
    assert report["failures"] == ["fp16: failed (build: RuntimeError: boom)"]  # a rendered video adds none
    text = render_markdown(report)
    assert ("[video/detections.mp4](video/detections.mp4): the first 4 test images as a 500x376 H.264 clip at 12 fps, "
            "through `int8` (onnxruntime, cpu) with `Detector.stream` (every frame, in order, batch 1; min_score 0.2, "
            "max_overlap 0.45, top_k 200): 4 frames, 6 detections drawn, 30.0 frames/s; the step took 1.2 s.") in text
    assert "p50 120 ms, p90 150 ms, p99 161 ms" in text
    assert "| decode | 5.0 | 4.0 | 6.0 | 7.0 |" in text and "| infer | 25.0 |" in text and "| sink |" not in text
    meta["video"] = {"status": "failed", "artifact": "int8", "error": "SourceError: cannot decode", "traceback": "..."}
    report = build_report(plan, results, meta)
    assert report["failures"][-1] == "annotated video (int8): SourceError: cannot decode" and not report["passed"]
    assert "Not rendered: failed: SourceError: cannot decode" in render_markdown(report)
    meta["video"] = {"status": "skipped", "reason": "PyAV is not installed: pip install 'ssd300-toolkit[video]'"}
    assert "Not rendered: skipped: PyAV is not installed" in render_markdown(build_report(plan, results, meta))
