"""End-to-end models through the runtime: the Detector skips its postprocess and reads the model's
padded detections, identical to the fp32 model + NumPy postprocess at the baked settings and at
every setting that can be applied after the fact; the rest is refused before inference."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ssd_runtime import Detector
from ssd_runtime.bench import benchmark
from ssd_runtime.cli import main as runtime_main
from ssd_runtime.compare import compare_detections
from ssd_runtime.end2end import (
    End2EndSettingsError,
    check_settings,
    end2end_detections,
    padded_to_detections,
)
from ssd_runtime.evaluate import map_report_of_model_file
from ssd_runtime.spec import EVALUATION_SETTINGS, PostprocessSettings

BAKED = EVALUATION_SETTINGS  # min_score 0.01, max_overlap 0.45, top_k 200


@pytest.fixture(scope="module")
def end2end_onnx(runtime_checkpoint, tmp_path_factory):
    """The end2end export of the session's model at the evaluation settings, no candidate cap."""
    from ssd_export.onnx.export import export_onnx

    out = tmp_path_factory.mktemp("e2e") / "small_e2e.onnx"
    export_onnx(runtime_checkpoint, out, variant="end2end", end2end_settings=BAKED, max_candidates=10**6, verify=False)
    return out


@pytest.fixture(scope="module")
def e2e(end2end_onnx):
    return Detector.load(end2end_onnx)


@pytest.fixture(scope="module")
def raw(runtime_onnx):
    return Detector.load(runtime_onnx)


@pytest.fixture(scope="module")
def pixels(voc_root, raw):
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:5]
    return raw.prepare(images).pixels


def _assert_identical(a, b, settings):
    comparison = compare_detections(a, b, settings)
    assert comparison.identical, comparison.mismatches[:5]


def test_backend_reports_detections_and_baked_settings(e2e):
    assert e2e.output_kind == "detections"
    assert e2e.backend.output_kind == "detections"
    assert e2e.backend.end2end.settings == BAKED


@pytest.mark.parametrize("settings", [
    BAKED,
    PostprocessSettings(0.2, 0.45, 200),   # higher min_score: applied after the fact
    PostprocessSettings(0.01, 0.45, 3),    # lower top_k
    PostprocessSettings(0.35, 0.45, 2),
], ids=["baked", "min_score", "top_k", "both"])
def test_end2end_equals_raw_model_with_numpy_postprocess(e2e, raw, pixels, settings):
    a = raw.fractional_detections(pixels, settings)
    b = e2e.fractional_detections(pixels, settings)
    assert sum(len(d) for d in a) > 0
    _assert_identical(a, b, settings)


@pytest.mark.parametrize("settings, problem", [
    (PostprocessSettings(0.01, 0.5, 200), "max_overlap 0.5"),
    (PostprocessSettings(0.005, 0.45, 200), "min_score 0.005 below"),
    (PostprocessSettings(0.01, 0.45, 201), "top_k 201 above"),
])
def test_settings_the_model_cannot_honour_are_refused_before_inference(e2e, pixels, settings, problem):
    calls = []
    infer = e2e.backend.infer
    e2e.backend.infer = lambda batch: calls.append(1) or infer(batch)  # instance attribute: this test only
    try:
        with pytest.raises(End2EndSettingsError, match=problem):
            e2e.fractional_detections(pixels, settings)
    finally:
        del e2e.backend.infer
    assert not calls


def test_detect_scales_to_each_image(e2e, raw, voc_root):
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:2]
    for a, b in zip(raw.detect(images, min_score=0.05, max_overlap=0.45), e2e.detect(images, min_score=0.05)):
        assert (a.width, a.height) == (b.width, b.height)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.class_names == b.class_names


def test_torch_postprocess_setting_reads_the_same_detections(end2end_onnx, e2e, pixels):
    torch_e2e = Detector.load(end2end_onnx, postprocess="torch")
    _assert_identical(e2e.fractional_detections(pixels, BAKED), torch_e2e.fractional_detections(pixels, BAKED), BAKED)


def test_padded_outputs_from_numpy_and_torch():
    import torch

    boxes = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 100
    scores = np.array([[0.9, 0.5, 0.0], [0.3, 0.0, 0.0]], np.float32)
    labels = np.array([[2, 1, -1], [4, -1, -1]], np.int64)
    num = np.array([2, 1], np.int64)
    for outputs in ((boxes, scores, labels, num), tuple(torch.from_numpy(x) for x in (boxes, scores, labels, num))):
        dets = padded_to_detections(*outputs)
        assert [len(d) for d in dets] == [2, 1]
        np.testing.assert_array_equal(dets[0].boxes, boxes[0, :2])
        assert dets[0].labels.dtype == np.int64 and dets[0].scores.dtype == np.float32
    kept = end2end_detections((boxes, scores, labels, num), PostprocessSettings(0.1, 0.5, 3), PostprocessSettings(0.5, 0.5, 3))
    assert [len(d) for d in kept] == [1, 0]  # 0.5 is not > 0.5


def test_check_settings_accepts_exactly_what_can_be_applied():
    check_settings(BAKED, BAKED)
    check_settings(BAKED, PostprocessSettings(0.99, 0.45, 1))
    with pytest.raises(End2EndSettingsError, match="re-export it"):
        check_settings(BAKED, PostprocessSettings(0.01, 0.44, 200))


def test_evaluate_and_bench_run_end2end_models(end2end_onnx, runtime_onnx, voc_root):
    ours = map_report_of_model_file(end2end_onnx, voc_root)
    reference = map_report_of_model_file(runtime_onnx, voc_root)
    assert ours["runtime"]["map"] == pytest.approx(reference["runtime"]["map"], abs=1e-9)
    report = benchmark(Detector.load(end2end_onnx), (2,), warmup=0, iterations=1)
    assert report["results"][0]["detections_per_image"] >= 0


def test_default_settings_are_the_baked_ones(e2e, raw, voc_root):
    image = min((voc_root / "JPEGImages").glob("*.jpg"))
    assert e2e.settings == BAKED
    assert len(e2e.detect(image)) == len(raw.detect(image, *BAKED.to_dict().values()))
    with pytest.raises(End2EndSettingsError, match="max_overlap"):
        e2e.detect(image, max_overlap=raw.spec.detection.max_overlap)  # 0.5, not the baked 0.45


def test_runtime_cli_detect_on_an_end2end_model(end2end_onnx, raw, voc_root, tmp_path, capsys):
    image = min((voc_root / "JPEGImages").glob("*.jpg"))
    argv = ["detect", "--model", str(end2end_onnx), "--json", "--out", str(tmp_path), "--min-score", "0.05", str(image)]
    assert runtime_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / f"{image.stem}.json").read_text())
    assert summary[0]["detections"] == len(written["detections"]) == len(raw.detect(image, 0.05, 0.45, 200))
