"""``ssd-export deploy`` end to end on the session's small model and dataset.

One deploy (module fixture: fp32, fp16, int8, end2end ONNX; engines skipped with the reason) is
checked against separate runs of the same APIs; reruns, a missed target, a failing artifact and an
interruption run on copies of its folder, so each reuses what it can and takes a few seconds.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import warnings

import pytest

from ssd_export.deploy import run as deploy_module
from ssd_export.deploy.run import DeployError, deploy, plan_artifacts, runtime_support
from ssd_export.deploy.steps import VIDEO_FPS, VIDEO_SIZE, report_settings, write_video
from ssd_runtime.convert import convert_dataset
from ssd_runtime.bootstrap import BootstrapSettings, format_interval, paired_bootstrap
from ssd_runtime.detector import Detector
from ssd_runtime.evaluate import TARGET_POINTS, map_of_detector_on_records, map_report_of_model_file
from ssd_runtime.fileio import sha256_file
from ssd_runtime.onnx_model import read_onnx_info
from ssd_runtime.video.stats import STAGES
from ssd_runtime.voc import read_voc_split, split_roots

# The INT8 target is opened wide (100 points: any delta is within it): on 8 generated images the briefly
# trained model's INT8 delta is noise of the CPU's kernels, +0.0005 points on one CPU and +1.93 on another
# (docs/development.md, "Reading a CPU-dependent failure"); these tests check the deploy, not INT8's accuracy
# (tests/ssd_export/test_int8.py holds that with a bound every CPU keeps). FP32 and FP16 keep their targets
# (FP16 measured within 0.005 points of FP32 on every CPU path, against 0.1).
TARGETS = {**TARGET_POINTS, "int8": 100.0}
# few images, few iterations: the run takes ~30 s on 2 cores, each rerun a few seconds
# (the INT8 parity, informative, takes 13 s on this barely trained model's near-tied scores); ONNX Runtime
# only (the default adds OpenVINO where installed): test_a_second_runtime_* adds it on a copy
FAST = {"calibration_images": 8, "bench_batches": (1, 2), "bench_warmup": 0, "bench_iterations": 2,
        "draw_images": 2, "int8_parity": False, "progress": False,
        "targets": {"int8": 100.0}, "backends": ["onnxruntime"]}
CLI_FAST = ["--calibration-images", "8", "--bench-batch-sizes", "1", "2", "--bench-warmup", "0", "--bench-iterations",
            "2", "--draw-images", "2", "--no-int8-parity", "--no-progress", "--target", "int8=100",
            "--backends", "onnxruntime"]
ONNX = ["fp32", "fp16", "int8", "end2end"]


@pytest.fixture(scope="module")
def deployed(runtime_checkpoint, voc_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an 8-image calibration set is below the recommended 500
        report = deploy(runtime_checkpoint, voc_root, out, **FAST)
    return out, report


def _copy(deployed, tmp_path):
    out, _ = deployed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def _rows(report):
    return {row["name"]: row for row in report["artifacts"]}


def test_every_onnx_artifact_is_built_evaluated_timed_and_drawn(deployed):
    out, report = deployed
    rows = _rows(report)
    assert list(rows) == ["pytorch", *ONNX]
    assert all(row["status"] == "ok" for row in rows.values()), {n: r["error"] for n, r in rows.items()}
    assert report["passed"] and report["failures"] == []
    for name in ONNX:
        row = rows[name]
        assert (out / f"ssd300_{name}.onnx").is_file() and row["path"] == str(out / f"ssd300_{name}.onnx")
        assert row["reused"] == {"build": False, "evaluate": False, "bench": False, "draw": False}
        assert row["target_points"] == TARGETS[row["precision"]]
        assert len(row["drawings"]["images"]) == 2 and all((out / "detections" / name).glob("*.png"))
    assert rows["end2end"]["precision"] == "fp32" and rows["int8"]["precision"] == "int8"
    # engines: skipped here (no TensorRT) with the reason in one line of both reports
    engines = report["engines"]
    assert engines["built"] is False and engines["reason"]
    assert not any(row["kind"] == "engine" for row in rows.values())
    markdown = (out / "report.md").read_text()
    assert f"TensorRT engines: skipped: {engines['reason']}" in markdown
    for figure in ("pr_curves", "latency", "detections"):
        assert (out / report["figures"][figure]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({report['figures'][figure]})" in markdown


def test_report_json_schema_machine_and_versions(deployed):
    out, report = deployed
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["format"] == "ssd300-deploy-report" and saved["schema_version"] == 1
    assert saved["machine"]["cpu"] and saved["machine"]["cores"] >= 1
    for package in ("python", "torch", "onnxruntime", "onnx", "numpy"):
        assert saved["versions"][package]
    assert saved["created_at"].endswith("Z") and saved["seconds"] > 0
    assert saved["split"] == "test" and saved["images"] == 8
    for row in saved["artifacts"]:
        assert set(row) >= {"name", "kind", "precision", "status", "map", "delta_points", "target_points",
                            "within_target", "classes", "bench", "size_bytes", "sha256", "reused"}


def test_report_values_equal_separate_runs_of_the_same_apis(deployed, runtime_checkpoint, voc_root):
    out, report = deployed
    rows = _rows(report)
    reference = Detector.load(runtime_checkpoint, "torch")
    records = read_voc_split(split_roots(voc_root, "test"), "test", reference.spec.class_names)
    expected_ref, _ = map_of_detector_on_records(reference, records)
    assert rows["pytorch"]["map"] == expected_ref.map
    for name in ONNX:
        row = rows[name]
        result, _ = map_of_detector_on_records(Detector.load(out / f"ssd300_{name}.onnx"), records)
        assert row["map"] == result.map, name
        assert [c["ap"] for c in row["classes"]] == [c.to_dict()["ap"] for c in result.classes]
        assert row["delta_points"] == pytest.approx((result.map - expected_ref.map) * 100.0, abs=1e-12)
        # the interval: the paired bootstrap of the same two evaluations (from the deploy's matches files)
        intervals = paired_bootstrap(result.matches, expected_ref.matches, BootstrapSettings())
        assert row["delta_points_interval"] == list(intervals.map), name
        assert [c["delta_points_interval"] for c in row["classes"]] == [
            None if intervals.classes[c.name] is None else list(intervals.classes[c.name]) for c in result.classes]
        assert format_interval(row["delta_points_interval"]) in (out / "report.md").read_text()
        assert row["within_target"] == (abs(row["delta_points"]) <= TARGETS[row["precision"]])
        assert row["size_bytes"] == (out / f"ssd300_{name}.onnx").stat().st_size
        assert row["sha256"] == sha256_file(out / f"ssd300_{name}.onnx")
        assert [e["batch_size"] for e in row["bench"]["results"]] == [1, 2]
        assert row["bench"]["images"] == "the first 2 test images" and row["bench"]["image_size"] is None
        for entry in row["bench"]["results"]:
            assert set(entry["stages"]) == {"preprocess", "inference", "postprocess", "end_to_end"}
            assert entry["stages"]["end_to_end"]["p99_ms"] >= entry["stages"]["end_to_end"]["p50_ms"] > 0
    assert rows["int8"]["verified"] is True and rows["int8"]["build"]["verification"]["checks"]["rules_violations"] == []
    for name in ("fp32", "fp16", "end2end"):
        assert rows[name]["verified"] is True
        assert json.loads((out / f"ssd300_{name}.onnx.verify.json").read_text())["passed"] is True
    # the end2end model carries the evaluation settings; the INT8 model the calibration set built from the data
    info = read_onnx_info(out / "ssd300_end2end.onnx")
    assert info.end2end.settings == reference.spec.evaluation
    int8 = read_onnx_info(out / "ssd300_int8.onnx")
    assert dict(int8.spec.provenance)["calibration_manifest_sha256"] == sha256_file(out / "calibration.json")
    assert report["calibration"]["built"] and report["calibration"]["images"] == 8
    warning = report["calibration"]["warnings"][0]  # 8 images, fewer than NVIDIA's recommended 500
    assert "500" in warning and f"warning: {warning}" in (out / "report.md").read_text()
    worst = max((r for r in rows.values() if r["delta_points"] is not None), key=lambda r: abs(r["delta_points"]))
    assert report["worst"] == worst["name"]
    assert report["bootstrap"] == BootstrapSettings().to_dict()


def test_deploy_reads_the_coco_layout_of_the_same_dataset(deployed, runtime_checkpoint, voc_root, tmp_path):
    coco = tmp_path / "coco"
    convert_dataset(voc_root, coco, "coco", images="link")  # the same images, COCO's annotations
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = deploy(runtime_checkpoint, coco, tmp_path / "out", **{**FAST, "artifacts": ["fp32", "int8"]})
    rows, voc_rows = _rows(report), _rows(deployed[1])
    assert list(rows) == ["pytorch", "fp32", "int8"] and report["images"] == 8
    assert all(row["status"] == "ok" for row in rows.values()), {n: r["error"] for n, r in rows.items()}
    for name in ("pytorch", "fp32"):
        assert rows[name]["map"] == voc_rows[name]["map"], name
        assert [c["ap"] for c in rows[name]["classes"]] == [c["ap"] for c in voc_rows[name]["classes"]]
    # INT8 calibrates on the COCO layout's images (chosen by their paths, which differ from VOC's: another mAP)
    manifest = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert manifest["dataset"]["format"] == "coco" and len(manifest["images"]) == 8
    # COCO data: COCO's AP, AP50, AP75 beside the VOC mAP (--metric auto), those of ssd-runtime eval on the same model
    assert report["metric"] == "coco" and deployed[1]["metric"] == "voc"
    assert all(row["coco"] is None for row in voc_rows.values())
    runtime = map_report_of_model_file(tmp_path / "out" / "ssd300_fp32.onnx", coco, metric="coco")["coco"]["stats"]
    assert rows["fp32"]["coco"] == {name: runtime[name] for name in ("AP", "AP50", "AP75")}
    assert all(set(row["coco"]) == {"AP", "AP50", "AP75"} for row in rows.values())
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| COCO AP | COCO AP50 | COCO AP75 |" in markdown and f"| {rows['fp32']['coco']['AP50']:.4f} |" in markdown
    assert "COCO AP" not in (deployed[0] / "report.md").read_text()


def test_rerun_reuses_matching_steps_and_redoes_changed_ones(deployed, runtime_checkpoint, voc_root, tmp_path):
    _, first = deployed
    copy = _copy(deployed, tmp_path)
    again = deploy(runtime_checkpoint, voc_root, copy, **FAST)
    before, after = _rows(first), _rows(again)
    for name, row in after.items():
        assert all(row["reused"].values()), (name, row["reused"])
        assert row["finished_at"] == before[name]["finished_at"]
        assert row["map"] == before[name]["map"] and row["bench"] == before[name]["bench"]
    # a changed file is rebuilt; the export is deterministic, so the steps keyed on its sha256 stay reused
    (copy / "ssd300_end2end.onnx").write_bytes(b"not the recorded model")
    third = _rows(deploy(runtime_checkpoint, voc_root, copy, **FAST))
    assert third["end2end"]["reused"] == {"build": False, "evaluate": True, "bench": True, "draw": True}
    assert third["end2end"]["sha256"] == before["end2end"]["sha256"]
    assert third["end2end"]["finished_at"]["build"] > before["end2end"]["finished_at"]["build"]
    for name in ("pytorch", "fp32", "fp16", "int8"):
        assert all(third[name]["reused"].values()), name
    assert again["video"]["reused"] and again["video"]["detections"] == first["video"]["detections"]
    skipped = deploy(runtime_checkpoint, voc_root, copy, **{**FAST, "video_frames": 0})
    assert skipped["video"] == {"status": "skipped", "reason": "not asked for (video_frames 0)"} and skipped["passed"]
    assert "Not rendered: skipped: not asked for (video_frames 0)" in (copy / "report.md").read_text()


def test_cli_exit_code_is_1_when_an_artifact_misses_its_target(deployed, runtime_checkpoint, voc_root, tmp_path,
                                                               capsys):
    from ssd_export.cli import main

    _, first = deployed
    copy = _copy(deployed, tmp_path)
    args = ["deploy", "--model", str(runtime_checkpoint), "--data", str(voc_root), "--out", str(copy), *CLI_FAST]
    assert main(args) == 0
    judged = [r for r in first["artifacts"] if r["delta_points"]]
    if not judged:  # every artifact scores exactly PyTorch's mAP on this CPU: a 0-point target is met, exit 0
        capsys.readouterr()
        assert main([*args, "--target", "int8=0", "--target", "fp16=0"]) == 0
        return
    # the artifact furthest from PyTorch (INT8 on every CPU measured) misses a target of half its delta
    missed = max(judged, key=lambda r: abs(r["delta_points"]))
    capsys.readouterr()
    assert main([*args, "--target", f"{missed['precision']}={abs(missed['delta_points']) / 2}"]) == 1
    assert f"ssd-export deploy: error: {missed['name']}: |delta mAP|" in capsys.readouterr().err
    report = json.loads((copy / "report.json").read_text())
    row = _rows(report)[missed["name"]]
    assert row["within_target"] is False and report["passed"] is False
    assert any(f.startswith(f"{missed['name']}: |delta mAP|") for f in report["failures"])
    assert "**FAIL**" in (copy / "report.md").read_text()


def test_a_failing_artifact_leaves_the_others(deployed, runtime_checkpoint, voc_root, tmp_path, monkeypatch):
    copy = _copy(deployed, tmp_path)
    (copy / "ssd300_fp32.onnx").unlink()  # forces its rebuild, which fails below
    real = deploy_module.build_onnx

    def build_onnx(checkpoint, artifact, spec):
        if artifact.name == "fp32":
            raise RuntimeError("exporter crashed")
        return real(checkpoint, artifact, spec)

    monkeypatch.setattr(deploy_module, "build_onnx", build_onnx)
    report = deploy(runtime_checkpoint, voc_root, copy, **FAST)
    rows = _rows(report)
    assert rows["fp32"]["status"] == "failed" and "exporter crashed" in rows["fp32"]["error"]
    assert "RuntimeError" in rows["fp32"]["traceback"]
    # int8 is quantized from fp32: failed for that reason; fp16 and end2end do not depend on it
    assert rows["int8"]["status"] == "failed" and "'fp32' did not build" in rows["int8"]["error"]
    for name in ("pytorch", "fp16", "end2end"):
        assert rows[name]["status"] == "ok" and all(rows[name]["reused"].values())
    assert report["passed"] is False
    # the video goes through the next artifact that ran, and says so
    assert report["video"]["status"] == "ok" and report["video"]["artifact"] == "fp16" and not report["video"]["reused"]
    markdown = (copy / "report.md").read_text()
    assert "- fp32: failed (build: RuntimeError: exporter crashed)" in markdown


def test_ctrl_c_writes_the_report_of_what_finished(deployed, runtime_checkpoint, voc_root, tmp_path, monkeypatch):
    copy = _copy(deployed, tmp_path)
    real = deploy_module.bench_artifact
    calls = []

    def bench_artifact(detector, batch_sizes, images, **kwargs):
        calls.append(detector)
        if len(calls) == 3:  # the third artifact: fp16
            raise KeyboardInterrupt
        return real(detector, batch_sizes, images, **kwargs)

    monkeypatch.setattr(deploy_module, "bench_artifact", bench_artifact)
    options = {**FAST, "bench_iterations": 3}  # other bench settings: every bench step runs again
    with pytest.raises(KeyboardInterrupt):
        deploy(runtime_checkpoint, voc_root, copy, **options)
    report = json.loads((copy / "report.json").read_text())
    rows = _rows(report)
    assert report["interrupted"] is True and report["passed"] is False
    assert [rows[n]["status"] for n in ["pytorch", *ONNX]] == ["ok", "ok", "interrupted", "not run", "not run"]
    assert rows["fp16"]["error"] == "interrupted during bench"
    # the steps that finished are kept: a rerun reuses them and does the rest
    monkeypatch.setattr(deploy_module, "bench_artifact", real)
    rows = _rows(deploy(runtime_checkpoint, voc_root, copy, **options))
    assert rows["fp32"]["reused"]["bench"] is True and rows["fp16"]["reused"]["bench"] is False
    assert all(row["status"] == "ok" for row in rows.values())


def test_engines_required_without_tensorrt_fail_before_anything_is_written(runtime_checkpoint, voc_root, tmp_path):
    with pytest.raises(DeployError, match="--engines require: TensorRT engines cannot be built here: .+"):
        deploy(runtime_checkpoint, voc_root, tmp_path / "out", engines="require", **FAST)
    assert not (tmp_path / "out").exists()


def test_plan_adds_the_int8_source_and_refuses_unknown_artifacts(tmp_path):
    plan = plan_artifacts(tmp_path, tmp_path / "m.pt", ["int8", "engines"], engines=True)
    assert [a.name for a in plan] == ["pytorch", "fp32", "int8", "trt-fp32", "trt-int8"]
    assert plan[2].source == "fp32" and plan[4].source == "int8" and plan[4].precision == "int8"
    assert [a.name for a in plan_artifacts(tmp_path, tmp_path / "m.pt", ["fp16", "engines"], engines=False)] == [
        "pytorch", "fp16"]
    with pytest.raises(DeployError, match="unknown artifact"):
        plan_artifacts(tmp_path, tmp_path / "m.pt", ["fp64"], engines=False)


def test_bad_targets_and_bench_settings_are_refused(runtime_checkpoint, voc_root, tmp_path):
    with pytest.raises(DeployError, match="targets"):
        deploy(runtime_checkpoint, voc_root, tmp_path / "a", **{**FAST, "targets": {"fp8": 1.0}})
    with pytest.raises(DeployError, match="bench"):
        deploy(runtime_checkpoint, voc_root, tmp_path / "b", **{**FAST, "bench_batches": (0,)})
    with pytest.raises(DeployError, match="video_frames must be >= 0"):
        deploy(runtime_checkpoint, voc_root, tmp_path / "c", **{**FAST, "video_frames": -1})
    assert not (tmp_path / "c").exists()


def test_the_annotated_video_streams_the_test_images_through_the_deployed_model(deployed, voc_root, tmp_path):
    """The last step: the test split's 8 images (fewer than the 48 asked) as a 12 fps clip through the INT8 model
    (the preferred artifact without engines) into video/detections.mp4; the detections drawn on each frame are
    Detector.detect's on the same frame of the same clip, decoded here, at the drawing settings."""
    av = pytest.importorskip("av", reason="PyAV is not installed: pip install 'ssd300-toolkit[video]'")
    out, report = deployed
    video = report["video"]
    assert (video["status"], video["artifact"], video["runtime"], video["reused"]) == ("ok", "int8", "onnxruntime", False)
    assert video["frames"] == len(video["detections"]) == 8 and video["link"] == "video/detections.mp4"
    assert video["video"] == str(out / "video" / "detections.mp4") and video["batch_size"] == 1
    assert video["latency"]["count"] == 8 and all(video["stages"][stage]["count"] == 8 for stage in STAGES)
    assert video["throughput_fps"] > 0 and video["seconds"] >= video["encode_seconds"] > 0
    with av.open(video["video"]) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate, stream.codec_context.name) == (*VIDEO_SIZE, 12, "h264")
        assert sum(1 for _ in container.decode(stream)) == 8
    detector = Detector.load(out / "ssd300_int8.onnx")
    records = read_voc_split(split_roots(voc_root, "test"), "test", detector.spec.class_names)
    clip = tmp_path / "clip.mp4"
    assert write_video([r.image_path for r in records[:8]], clip, VIDEO_FPS) == 8
    with av.open(str(clip)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    settings = report_settings(detector.spec)
    assert video["detections"] == [len(detector.detect(f, settings.min_score, settings.max_overlap, settings.top_k))
                                   for f in frames]
    assert sum(video["detections"]) > 0  # something is drawn: the check above is not of empty frames
    markdown = (out / "report.md").read_text()
    assert "## Annotated video" in markdown and "[video/detections.mp4](video/detections.mp4): the first 8 test" in markdown
    assert report["passed"]


@pytest.mark.parametrize("fake_trt", ["11.1"], indirect=True)
def test_engines_through_the_fake_tensorrt(fake_trt, stand_in_gpu, deployed, runtime_checkpoint, voc_root, tmp_path,
                                           monkeypatch):
    """The engine steps' own control flow: the FAKE tensorrt (tests/helpers/fakes/tensorrt.py) builds "plans" that run
    their ONNX in ONNX Runtime on the host-memory stand-in GPU, so each engine must score exactly its source."""
    monkeypatch.setattr("ssd_runtime.cuda_device.CudaMemory", lambda index=0: stand_in_gpu)
    copy = _copy(deployed, tmp_path)
    report = deploy(runtime_checkpoint, voc_root, copy, artifacts=["fp32", "int8", "engines"], **FAST)
    rows = _rows(report)
    assert list(rows) == ["pytorch", "fp32", "int8", "trt-fp32", "trt-int8"]
    assert report["engines"] == {"mode": "auto", "built": True, "reason": None}
    for name in ("fp32", "int8"):
        engine = rows[f"trt-{name}"]
        assert engine["status"] == "ok", engine["error"]
        assert engine["verified"] is True and engine["precision"] == rows[name]["precision"]
        assert engine["build"]["engine"]["tensorrt_version"] == fake_trt.__version__
        assert engine["build"]["engine"]["profile"]["images"]["max"] == [8, 3, 300, 300]  # the evaluation's batch
        assert (copy / f"ssd300_{name}.engine").is_file() and (copy / f"ssd300_{name}.engine.json").is_file()
        assert engine["map"] == rows[name]["map"] and engine["bench"]["backend"] == "TensorRTBackend"
    assert all(all(rows[n]["reused"].values()) for n in ("pytorch", "fp32", "int8"))
    # a rerun reuses the engines too (plan and sidecar unchanged)
    again = _rows(deploy(runtime_checkpoint, voc_root, copy, artifacts=["fp32", "int8", "engines"], **FAST))
    assert all(again["trt-int8"]["reused"].values())


def test_a_second_runtime_reads_every_onnx_artifact_beside_onnxruntime(deployed, runtime_checkpoint, voc_root,
                                                                       tmp_path):
    """``backends=["onnxruntime", "openvino"]`` on a copy: ONNX Runtime's rows reused as they were, one OpenVINO
    row per ONNX artifact (the same file) verified, evaluated, timed and drawn in OpenVINO, its mAP its own."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'ssd300-toolkit[openvino]'")
    _, first = deployed
    copy = _copy(deployed, tmp_path)
    both = {**FAST, "backends": ["onnxruntime", "openvino"]}
    report = deploy(runtime_checkpoint, voc_root, copy, **both)
    rows, before = _rows(report), _rows(first)
    assert list(rows) == ["pytorch", *(name for v in ONNX for name in (v, f"openvino-{v}"))]
    assert report["runtimes"] == {"used": ["onnxruntime", "openvino"], "default": False, "left_out": {}}
    assert report["command"][-3:] == ["--backends", "onnxruntime", "openvino"] and report["passed"], report["failures"]
    reference = Detector.load(runtime_checkpoint, "torch")
    records = read_voc_split(split_roots(voc_root, "test"), "test", reference.spec.class_names)
    for v in ONNX:
        ort, ov = rows[v], rows[f"openvino-{v}"]
        assert ort["runtime"] == "onnxruntime" and all(ort["reused"].values())
        assert (ort["map"], ort["bench"], ort["verified"]) == (before[v]["map"], before[v]["bench"], before[v]["verified"])
        assert ov["status"] == "ok", ov["error"]
        assert (ov["runtime"], ov["reads_file_of"], ov["path"], ov["precision"]) == (
            "openvino", v, ort["path"], ort["precision"])
        assert ov["reused"] == {"verify": False, "evaluate": False, "bench": False, "draw": False}
        assert ov["runtime_options"]["inference_precision"] == "f32"  # FP32 artifacts checked at FP32
        assert ov["bench"]["backend"] == "OpenVinoBackend" and ov["size_bytes"] is None  # the file is ort's
        assert len(ov["drawings"]["images"]) == 2
    # each row's mAP is its runtime's: OpenVINO's equals an evaluation in OpenVINO outside the deploy
    for v in ("fp32", "int8"):
        result, _ = map_of_detector_on_records(Detector.load(copy / f"ssd300_{v}.onnx", "openvino"), records)
        assert rows[f"openvino-{v}"]["map"] == result.map
        assert rows[f"openvino-{v}"]["delta_points"] == pytest.approx((result.map - rows["pytorch"]["map"]) * 100.0)
    # the parity check ran in OpenVINO (fp32: identical detections required); INT8's is off here, as at its build
    for v in ("fp32", "fp16", "end2end"):
        assert rows[f"openvino-{v}"]["verified"] is True
        saved = json.loads((copy / f"ssd300_{v}.onnx.openvino.verify.json").read_text())
        assert saved["passed"] is True and saved["options"]["inference_precision"] == "f32"
    assert rows["openvino-int8"]["verified"] is None
    markdown = (copy / "report.md").read_text()
    assert f"| openvino-int8 | openvino | int8 | {rows['openvino-int8']['map']:.4f} |" in markdown
    assert f"| int8 | onnxruntime | int8 | {rows['int8']['map']:.4f} |" in markdown
    assert "- ONNX runtimes: onnxruntime, openvino (asked for)" in markdown and "- openvino options: " in markdown
    # the runtime list is an input: a rerun with both reuses every step of both
    again = _rows(deploy(runtime_checkpoint, voc_root, copy, **both))
    assert all(all(row["reused"].values()) for row in again.values())
    assert again["openvino-int8"]["map"] == rows["openvino-int8"]["map"]


def test_default_runtimes_add_openvino_where_it_imports(monkeypatch):
    used, line = runtime_support(None)
    if importlib.util.find_spec("openvino") is not None:
        assert used == ["onnxruntime", "openvino"] and line == {"used": used, "default": True, "left_out": {}}
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError, as where it is absent
    used, line = runtime_support(None)
    assert used == ["onnxruntime"] and line["default"] is True
    assert "pip install 'ssd300-toolkit[openvino]'" in line["left_out"]["openvino"]
    # asked for by name, a missing runtime is an error, not a row left out
    with pytest.raises(DeployError, match="--backends openvino: not installed"):
        runtime_support(["onnxruntime", "openvino"])
    with pytest.raises(DeployError, match="must include onnxruntime"):
        runtime_support(["openvino"])
    with pytest.raises(DeployError, match="must include onnxruntime"):
        runtime_support(["onnxruntime", "tensorrt"])


def test_backends_flag_and_the_plan_of_two_runtimes(tmp_path):
    from ssd_export.cli import build_parser

    args = ["deploy", "--model", "m.pt", "--data", "d", "--out", "o"]
    parser = build_parser()
    assert parser.parse_args(args).backends is None  # deploy's default: runtime_support decides
    assert parser.parse_args([*args, "--backends", "onnxruntime", "openvino"]).backends == ["onnxruntime", "openvino"]
    with pytest.raises(SystemExit):
        parser.parse_args([*args, "--backends", "tensorrt"])
    plan = plan_artifacts(tmp_path, tmp_path / "m.pt", ["int8", "engines"], engines=True,
                          runtimes=["onnxruntime", "openvino"])
    assert [(a.name, a.backend, a.builds) for a in plan] == [
        ("pytorch", "torch", False), ("fp32", "onnxruntime", True), ("openvino-fp32", "openvino", False),
        ("int8", "onnxruntime", True), ("openvino-int8", "openvino", False), ("trt-fp32", "tensorrt", True),
        ("trt-int8", "tensorrt", True)]
    assert plan[4].path == plan[3].path and plan[4].source == "int8"
