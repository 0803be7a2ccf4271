"""Detector: ONNX Runtime vs PyTorch backends, NumPy vs torch postprocess, input forms, threads."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ssd_runtime import Detector, ImageDetections
from ssd_runtime.images import open_image
from ssd_runtime.compare import compare_detections
from ssd_runtime.detector import POSTPROCESS_ALIASES, POSTPROCESSES, resolve_postprocess


@pytest.fixture(scope="module")
def images(voc_root):
    return sorted((voc_root / "JPEGImages").glob("*.jpg"))[:6]


@pytest.fixture(scope="module")
def ort(runtime_onnx):
    return Detector.load(runtime_onnx)


@pytest.fixture(scope="module")
def torch_detector(runtime_checkpoint):
    return Detector.load(runtime_checkpoint)


def _assert_identical(a, b, settings):
    comparison = compare_detections(a, b, settings)
    assert comparison.identical, comparison.mismatches[:5]


@pytest.mark.parametrize("settings_name", ["evaluation", "detection"])
def test_ort_and_torch_backends_give_identical_detections(ort, torch_detector, images, settings_name):
    settings = getattr(ort.spec, settings_name)
    batch = ort.prepare(images).pixels
    a = ort.fractional_detections(batch, settings)
    b = torch_detector.fractional_detections(batch, settings)
    assert sum(len(d) for d in a) > 0
    _assert_identical(a, b, settings)


def test_raw_detections_is_a_deprecated_alias_of_fractional_detections(ort, images):
    batch = ort.prepare(images[:2]).pixels
    settings = ort.spec.evaluation
    with pytest.warns(DeprecationWarning, match="fractional_detections"):
        old = ort.raw_detections(batch, settings)
    _assert_identical(old, ort.fractional_detections(batch, settings), settings)


def test_numpy_and_torch_postprocess_agree(runtime_onnx, runtime_checkpoint, ort, images):
    batch = ort.prepare(images[:3]).pixels
    settings = ort.spec.evaluation
    reference = ort.fractional_detections(batch, settings)
    for path in (runtime_onnx, runtime_checkpoint):
        _assert_identical(reference, Detector.load(path, postprocess="torch").fractional_detections(batch, settings), settings)


def test_detect_input_forms(ort, images):
    pil = [open_image(p) for p in images[:2]]
    arrays = [np.asarray(p) for p in pil]
    single = ort.detect(images[0])
    assert isinstance(single, ImageDetections)
    batched = ort.detect(images[:2])
    assert isinstance(batched, list) and len(batched) == 2
    for other in (ort.detect(pil), ort.detect(arrays)):  # same batch size: bit-identical
        for x, y in zip(batched, other):
            np.testing.assert_array_equal(x.boxes, y.boxes)
            np.testing.assert_array_equal(x.scores, y.scores)
            assert x.class_names == y.class_names
    for x, y in zip([single, ort.detect(pil[1])], batched):
        assert x.class_names == y.class_names
    # batch 1 vs 2: float rounding only (ONNX Runtime's kernels may sum in another order for another batch),
    # so identical detections up to threshold edges and near-tied swaps, not the same arrays
    settings = ort.settings
    one_by_one = [d for p in images[:2] for d in ort.fractional_detections(ort.prepare([p]).pixels, settings)]
    _assert_identical(one_by_one, ort.fractional_detections(ort.prepare(images[:2]).pixels, settings), settings)
    # a uint8 (N, H, W, 3) batch of same-sized images
    same = np.stack([arrays[0], arrays[0]])
    out = ort.detect(same)
    assert len(out) == 2 and np.array_equal(out[0].boxes, out[1].boxes)


def test_results_are_pixels_names_and_default_settings(ort, images):
    result = ort.detect(images[0])
    width, height = open_image(images[0]).size
    assert (result.width, result.height) == (width, height)
    assert result.boxes.dtype == np.float32 and result.boxes.shape == (len(result), 4)
    assert result.labels.dtype == np.int64 and result.scores.dtype == np.float32
    assert result.class_names == tuple(ort.spec.class_names[i] for i in result.labels)
    assert np.all(result.scores > ort.spec.detection.min_score)
    frac = ort.fractional_detections(ort.prepare([images[0]]).pixels, ort.spec.detection)[0]
    np.testing.assert_allclose(result.boxes, frac.boxes * [width, height, width, height], rtol=1e-6)
    assert len(ort.detect(images[0], top_k=3)) == min(3, len(result))
    entry = result.to_dict()
    assert entry["width"] == width and len(entry["detections"]) == len(result)


@pytest.mark.parametrize("postprocess", POSTPROCESSES)
@pytest.mark.parametrize("which", ["onnx", "pt"])
def test_no_detection_gives_empty_arrays(runtime_onnx, runtime_checkpoint, images, postprocess, which):
    detector = Detector.load(runtime_onnx if which == "onnx" else runtime_checkpoint, postprocess=postprocess)
    result = detector.detect(images[0], min_score=0.99999999)
    assert result.boxes.shape == (0, 4) and result.labels.shape == (0,) and result.scores.shape == (0,)
    assert result.boxes.dtype == np.float32 and result.labels.dtype == np.int64 and result.class_names == ()


@pytest.mark.parametrize("which", ["onnx", "pt"])
def test_threads_equal_serial(ort, torch_detector, images, which):
    detector = ort if which == "onnx" else torch_detector
    jobs = [images[i % 4] for i in range(8)]
    serial = [detector.detect(path) for path in jobs]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(detector.detect, jobs))
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_postprocess_names_and_the_gpu_alias(ort):
    assert POSTPROCESSES == ("numpy", "torch") and POSTPROCESS_ALIASES == {"gpu": "torch"}
    assert [resolve_postprocess(name) for name in ("numpy", "torch", "gpu")] == ["numpy", "torch", "torch"]
    # "gpu" (the torch postprocess's older name) is accepted and stored under its name
    assert Detector(ort.backend, postprocess="gpu").postprocess == "torch"
    with pytest.raises(ValueError, match="postprocess must be one of"):
        resolve_postprocess("cuda")


def test_load_errors(tmp_path, runtime_onnx):
    with pytest.raises(FileNotFoundError, match="model not found"):
        Detector.load(tmp_path / "missing.onnx")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="no backend for files ending in '.bin'"):
        Detector.load(tmp_path / "model.bin")
    with pytest.raises(ValueError, match="postprocess must be one of"):
        Detector.load(runtime_onnx, postprocess="cuda")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="garbage.onnx"):
        Detector.load(tmp_path / "garbage.onnx")
