"""Backend registry (lazy, by file kind) and the ONNX Runtime backend."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ssd_runtime.backends import BACKENDS, BackendError, backend_class, resolve_backend
from ssd_runtime.onnx_model import META_END2END, META_VARIANT, OnnxModelError
from ssd_runtime.preprocess import InputError


def test_resolve_backend_by_kind():
    assert resolve_backend("m.onnx") == "onnxruntime"
    assert resolve_backend("dir/M.PT") == "torch"
    assert resolve_backend("m.pth") == "torch"
    assert resolve_backend("m.engine") == "tensorrt" == resolve_backend("m.plan")
    assert resolve_backend("m.bin", "onnxruntime") == "onnxruntime"
    with pytest.raises(BackendError, match=r"'\.bin'.*known kinds"):
        resolve_backend("m.bin")
    with pytest.raises(BackendError, match="unknown backend 'tflite'"):
        resolve_backend("m.onnx", "tflite")
    assert BACKENDS["torch"] == "ssd_train.backend:TorchCheckpointBackend"


def test_missing_backend_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(BACKENDS, "tensorrt", "ssd_runtime.backends.no_such_module:TensorRTBackend")
    with pytest.raises(BackendError, match="backend 'tensorrt'.*not available"):
        backend_class("tensorrt")


FRESH = """
import json, sys
from ssd_runtime import Detector
import numpy as np
detector = Detector.load(sys.argv[1])
detector.detect(np.zeros((60, 80, 3), np.uint8))
after_onnx = sorted(m for m in ("torch", "ssd_train", "ssd_export") if m in sys.modules)
Detector.load(sys.argv[2])
after_pt = sorted(m for m in ("torch", "ssd_train", "ssd_export") if m in sys.modules)
print(json.dumps({"after_onnx": after_onnx, "after_pt": after_pt}))
"""


def test_registry_imports_ssd_train_only_when_a_checkpoint_is_loaded(runtime_onnx, runtime_checkpoint):
    out = subprocess.run([sys.executable, "-c", FRESH, str(runtime_onnx), str(runtime_checkpoint)],
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["after_onnx"] == []  # ONNX Runtime + NumPy postprocess: no torch at all
    assert report["after_pt"] == ["ssd_train", "torch"]


@pytest.fixture(scope="module")
def ort_backend(runtime_onnx):
    return backend_class("onnxruntime").load(runtime_onnx)


def test_ort_backend_interface(ort_backend, runtime_onnx):
    from ssd_runtime.onnx_model import read_onnx_spec

    assert ort_backend.spec == read_onnx_spec(runtime_onnx)
    assert ort_backend.input_kind == "float32-nchw" and ort_backend.device == "cpu"
    locs, logits = ort_backend.infer(np.zeros((2, 3, 300, 300), np.float32))
    assert locs.shape == (2, 8732, 4) and logits.shape == (2, 8732, ort_backend.spec.num_classes)
    assert locs.dtype == logits.dtype == np.float32


@pytest.mark.parametrize(
    "batch, words",
    [
        (np.zeros((1, 3, 512, 512), np.float32), ["(1, 3, 512, 512)", "(1, 3, 300, 300)"]),
        (np.zeros((1, 3, 300, 300), np.float64), ["float64", "float32"]),
        (np.zeros((1, 300, 300, 3), np.uint8), ["uint8 (1, 300, 300, 3)", "float32 (1, 3, 300, 300)"]),
    ],
)
def test_ort_backend_wrong_input(ort_backend, batch, words):
    with pytest.raises(InputError) as info:
        ort_backend.infer(batch)
    for word in words:
        assert word in str(info.value)


def _rewrite(src, dst, edit):
    import onnx

    proto = onnx.load(str(src))
    edit(proto)
    onnx.save(proto, str(dst))
    return dst


def test_ort_refuses_end2end_metadata_on_a_raw_graph(runtime_onnx, tmp_path):
    def edit(proto):
        for prop in proto.metadata_props:
            if prop.key == META_VARIANT:
                prop.value = "end2end"
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_END2END, json.dumps(
            {"settings": {"min_score": 0.2, "max_overlap": 0.5, "top_k": 200}, "max_candidates": 4096})

    path = _rewrite(runtime_onnx, tmp_path / "e2e.onnx", edit)
    with pytest.raises(OnnxModelError, match="expected outputs boxes, scores, labels, num_detections"):
        backend_class("onnxruntime").load(path)


def test_ort_refuses_escaping_external_data(runtime_onnx, tmp_path):
    from onnx import TensorProto

    def edit(proto):
        tensor = proto.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "../../etc/passwd"

    path = _rewrite(runtime_onnx, tmp_path / "escape.onnx", edit)
    with pytest.raises(OnnxModelError, match=r"refused .*escape.onnx.*\.\./\.\./etc/passwd"):
        backend_class("onnxruntime").load(path)


def test_uint8_nhwc_variant_gives_identical_detections(runtime_checkpoint, runtime_onnx, voc_root, tmp_path):
    from ssd_export.onnx.export import export_onnx
    from ssd_runtime import Detector
    from ssd_runtime.postprocess import compare_detections

    path = tmp_path / "uint8.onnx"
    export_onnx(runtime_checkpoint, path, variant="uint8-nhwc", verify=False)
    uint8 = Detector.load(path)
    assert uint8.backend.input_kind == "uint8-nhwc"
    with pytest.raises(InputError, match=r"expects uint8 \(1, 300, 300, 3\).*received float32 \(1, 3, 300, 300\)"):
        uint8.backend.infer(np.zeros((1, 3, 300, 300), np.float32))
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:3]
    fp32 = Detector.load(runtime_onnx)
    settings = fp32.spec.evaluation
    a = fp32.raw_detections(fp32.prepare(images).pixels, settings)
    b = uint8.raw_detections(uint8.prepare(images).pixels, settings)
    comparison = compare_detections(a, b, settings)
    assert comparison.identical, comparison.mismatches[:5]
