"""ssd-runtime eval / bench / detect, and runtime evaluation parity with the PyTorch evaluation."""
from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from ssd_runtime.cli import main
from ssd_runtime.detector import Detector


def test_eval_json_matches_the_pytorch_evaluation(runtime_onnx, runtime_checkpoint, voc_root, capsys):
    """Runtime mAP (ONNX Runtime) vs the checkpoint through the runtime vs ssd-train's own evaluate."""
    from ssd_train.checkpoint import load_model
    from ssd_train.data import VOCDetection
    from ssd_train.train import evaluate

    code = main(["eval", "--model", str(runtime_onnx), "--data", str(voc_root), "--checkpoint",
                 str(runtime_checkpoint), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["within_target"] is True
    assert abs(report["delta_points"]) <= 0.05 and report["precision"] == "fp32"
    assert report["runtime"]["images"] == 8 and report["settings"] == {"min_score": 0.01, "max_overlap": 0.45, "top_k": 200}
    model, spec = load_model(runtime_checkpoint)
    dataset = VOCDetection.from_voc(voc_root, "test", class_names=spec.class_names, train=False)
    pytorch = evaluate(model, dataset, spec, batch_size=8)
    assert abs(report["runtime"]["map"] - pytorch.map) * 100 <= 0.05
    assert report["checkpoint"]["map"] == pytest.approx(pytorch.map, abs=1e-9)
    # the delta's paired bootstrap interval (defaults from ssd_runtime.bootstrap) and each class's
    from ssd_runtime.bootstrap import INTERVAL_LEVEL, RESAMPLES, SEED
    from ssd_runtime.evaluate import format_report

    assert report["bootstrap"]["resamples"] == RESAMPLES and report["bootstrap"]["seed"] == SEED
    assert report["bootstrap"]["interval_level"] == INTERVAL_LEVEL
    lo, hi = report["delta_points_interval"]
    assert lo <= hi
    assert report["interval_wider_than_target"] is (hi - lo > 2 * report["target_points"])
    assert [c["name"] for c in report["class_deltas"]] == [c["name"] for c in report["runtime"]["classes"]]
    assert all(c["delta_points_interval"] is None or c["delta_points_interval"][0] <= c["delta_points_interval"][1]
               for c in report["class_deltas"])
    assert f"[{lo:+.3f}, {hi:+.3f}]" in format_report(report)
    # the table form
    assert main(["eval", "--model", str(runtime_onnx), "--data", str(voc_root), "--max-images", "2"]) == 0
    table = capsys.readouterr().out
    assert "mAP" in table and "runtime" in table


def test_eval_table_shows_intervals_and_when_one_is_wider_than_the_target():
    from ssd_runtime.bootstrap import BootstrapSettings
    from ssd_runtime.evaluate import format_report

    classes = [{"name": "circle", "ap": 0.5}, {"name": "square", "ap": None}]
    report = {"model": "m.onnx", "backend": "OrtBackend", "device": "cpu", "precision": "fp32", "postprocess": "numpy",
              "data": "d", "split": "test", "ap_method": "11point", "settings": {}, "target_points": 0.05,
              "runtime": {"map": 0.5, "classes": classes, "images": 8},
              "checkpoint": {"map": 0.499, "classes": [{"name": "circle", "ap": 0.499}, {"name": "square", "ap": None}]},
              "delta_points": 0.1, "within_target": False, "delta_points_interval": [-0.02, 0.3],
              "interval_wider_than_target": True, "bootstrap": BootstrapSettings().to_dict(),
              "class_deltas": [{"name": "circle", "delta_points": 0.1, "delta_points_interval": [-0.02, 0.3]},
                               {"name": "square", "delta_points": None, "delta_points_interval": None}]}
    text = format_report(report)
    assert "95% interval" in text and text.count("[-0.020, +0.300]") == 3  # circle, mAP, the summary line
    assert "interval wider than the target" in text and "1000 paired resamples of the 8 images, seed 0" in text
    report.update(delta_points_interval=[0.08, 0.12], interval_wider_than_target=False)
    assert "interval wider than the target" not in format_report(report)


def test_bench_report_structure(runtime_onnx, capsys):
    assert main(["bench", "--model", str(runtime_onnx), "--batch-sizes", "1", "2", "--warmup", "1",
                 "--iterations", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "OrtBackend" and report["postprocess"] == "numpy"
    assert [r["batch_size"] for r in report["results"]] == [1, 2]
    for entry in report["results"]:
        assert set(entry["stages"]) == {"preprocess", "inference", "postprocess", "end_to_end"}
        for stats in entry["stages"].values():
            assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
            assert stats["images_per_s"] > 0
    assert main(["bench", "--model", str(runtime_onnx), "--batch-sizes", "1", "--warmup", "0", "--iterations", "1"]) == 0
    assert "Performance summary" in capsys.readouterr().out


def test_bench_on_given_images_times_those_images(runtime_onnx, voc_root, capsys):
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:2]
    assert main(["bench", "--model", str(runtime_onnx), "--batch-sizes", "3", "--warmup", "0", "--iterations", "1",
                 "--images", *map(str, images), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == "2 given images" and report["image_size"] is None
    detector = Detector.load(runtime_onnx)
    found = [len(detector.detect(str(p))) for p in images]
    # a batch of 3 from 2 images cycles: a, b, a
    assert report["results"][0]["detections_per_image"] == round((found[0] + found[1] + found[0]) / 3, 2)


def test_bench_states_threads_and_the_backend_options(runtime_onnx, capsys):
    """The same artifact timed in OpenVINO (one backend per run; benchmarks/openvino.py compares runtimes):
    threads and the inference precision in force are in the report and the summary."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'ssd300-toolkit[openvino]'")
    args = ["bench", "--model", str(runtime_onnx), "--batch-sizes", "1", "--warmup", "0", "--iterations", "1"]
    assert main([*args, "--backend", "openvino", "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "OpenVinoBackend" and (report["threads"], report["cores"]) == (1, os.cpu_count())
    assert report["options"]["inference_precision"] == "f32" and report["options"]["intra_op_threads"] == 1
    assert main(args) == 0  # ONNX Runtime at its default pool
    summary = capsys.readouterr().out
    assert f"Threads: the runtime default (every core), {os.cpu_count()} cores" in summary
    assert main([*args, "--backend", "openvino", "--threads", "1"]) == 0
    summary = capsys.readouterr().out
    assert f"Threads: 1, {os.cpu_count()} cores" in summary and "inference_precision f32" in summary


def test_detect_writes_images_and_json(runtime_onnx, voc_root, tmp_path, capsys):
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:2]
    out = tmp_path / "out"
    assert main(["detect", "--model", str(runtime_onnx), *map(str, images), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary) == 2
    for path, entry in zip(images, summary):
        drawn = Image.open(out / f"{path.stem}.jpg")
        assert drawn.size == Image.open(path).size
        data = json.loads((out / f"{path.stem}.json").read_text())
        assert data["image"] == str(path) and len(data["detections"]) == entry["detections"]
        for det in data["detections"]:
            assert set(det) == {"box", "label", "class_name", "score"} and det["score"] > 0.2


def test_postprocess_and_ap_method_choices_come_from_the_constants():
    from ssd_runtime.cli import build_parser
    from ssd_runtime.detector import POSTPROCESS_ALIASES, POSTPROCESSES
    from ssd_runtime.metric import AP_METHODS

    parser = build_parser()
    for name in (*POSTPROCESSES, *POSTPROCESS_ALIASES):
        assert parser.parse_args(["bench", "--model", "m.onnx", "--postprocess", name]).postprocess == name
    for method in AP_METHODS:
        assert parser.parse_args(["eval", "--model", "m.onnx", "--data", "d", "--ap-method", method]).ap_method == method
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--model", "m.onnx", "--postprocess", "cuda"])


def test_flag_defaults_are_the_api_defaults():
    import inspect

    from ssd_runtime.bench import benchmark
    from ssd_runtime.cli import build_parser
    from ssd_runtime.detector import Detector
    from ssd_runtime.evaluate import map_report_of_model_file
    from ssd_runtime.priors import PriorConfig

    def default(func, name):
        return inspect.signature(func).parameters[name].default

    parser = build_parser()
    ev = parser.parse_args(["eval", "--model", "m.onnx", "--data", "d"])
    assert (ev.split, ev.batch_size, ev.max_images, ev.ap_method) == tuple(
        default(map_report_of_model_file, n) for n in ("split", "batch_size", "max_images", "ap_method"))
    assert (ev.backend, ev.device, ev.postprocess) == tuple(
        default(Detector.load, n) for n in ("backend", "device", "postprocess"))
    bench = parser.parse_args(["bench", "--model", "m.onnx"])
    assert (tuple(bench.batch_sizes), bench.warmup, bench.iterations) == tuple(
        default(benchmark, n) for n in ("batch_sizes", "warmup", "iterations"))
    assert parser.parse_args(["priors"]).clip == PriorConfig().clip


def test_cli_errors_are_short_messages(tmp_path, capsys):
    assert main(["detect", "--model", str(tmp_path / "missing.onnx"), "x.jpg"]) == 2
    assert "model not found" in capsys.readouterr().err
    (tmp_path / "m.bin").write_bytes(b"x")
    assert main(["bench", "--model", str(tmp_path / "m.bin")]) == 2
    assert "no backend" in capsys.readouterr().err
