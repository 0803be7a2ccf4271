"""Backend registry (lazy, by file kind) and the ONNX Runtime backend."""
from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ssd_runtime.backends import (
    BACKENDS,
    PROTOCOL_MEMBERS,
    Backend,
    BackendClosedError,
    BackendError,
    backend_class,
    resolve_backend,
)
from ssd_runtime.backends.onnxruntime import OrtBackend
from ssd_runtime.onnx_model import META_END2END, META_VARIANT, OnnxModelError
from ssd_runtime.preprocess import InputError
from ssd_runtime.variants import OUTPUT_KINDS, PRECISIONS, VARIANT_TABLE


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


def _declared(cls: type) -> set[str]:
    """What a class provides before any instance exists: its attributes, properties and methods, and the
    attributes its methods assign to ``self`` (read from its source)."""
    assigned = set()
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(cls)))):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in (t for top in targets for t in ast.walk(top)):  # tuple targets: a, b = ...
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                assigned.add(target.attr)
    return {name for name in PROTOCOL_MEMBERS if hasattr(cls, name)} | assigned


# ids other than the bare names: a "tensorrt" id would mark the test as needing TensorRT (tests/conftest.py),
# and the class check needs neither TensorRT nor a GPU
@pytest.mark.parametrize("name", list(BACKENDS), ids=[f"{name}-class" for name in BACKENDS])
def test_every_registered_backend_class_declares_every_protocol_member(name):
    cls = backend_class(name)  # the real class, imported through the registry (torch's needs ssd_train)
    assert [member for member in PROTOCOL_MEMBERS if member not in _declared(cls)] == []
    assert isinstance(inspect.getattr_static(cls, "load"), classmethod)
    assert all(callable(getattr(cls, method)) for method in ("infer", "close", "load"))


def test_protocol_members_are_what_callers_use():
    assert PROTOCOL_MEMBERS == ("spec", "path", "input_kind", "output_kind", "end2end", "device", "variant",
                                "precision", "options", "infer", "close", "load")


def _check_instance(backend, name: str) -> None:
    """A loaded backend: every protocol member present, with values of the contract's vocabularies."""
    assert isinstance(backend, Backend) and type(backend) is backend_class(name)
    assert [member for member in PROTOCOL_MEMBERS if not hasattr(backend, member)] == []
    assert backend.output_kind in OUTPUT_KINDS and backend.input_kind in {v.input_kind for v in VARIANT_TABLE.values()}
    assert (backend.end2end is not None) is (backend.output_kind == "detections")
    assert backend.variant is None or backend.variant in VARIANT_TABLE
    assert backend.precision in PRECISIONS and isinstance(backend.options, dict)


def test_ort_backend_provides_the_protocol_and_close_ends_it(runtime_onnx):
    backend = OrtBackend.load(runtime_onnx)
    _check_instance(backend, "onnxruntime")
    assert (backend.path, backend.variant, backend.precision) == (runtime_onnx, "fp32", "fp32")
    assert backend.options == {"variant": "fp32"}  # what bench reported before the protocol declared it
    backend.close()
    with pytest.raises(BackendClosedError, match="was closed"):
        backend.infer(np.zeros((1, 3, 300, 300), np.float32))


def test_openvino_backend_provides_the_protocol_and_close_ends_it(runtime_onnx):
    pytest.importorskip("openvino", reason="needs OpenVINO: pip install 'ssd300-toolkit[openvino]'")
    backend = backend_class("openvino").load(runtime_onnx)
    _check_instance(backend, "openvino")
    assert (backend.path, backend.variant, backend.precision, backend.device) == (runtime_onnx, "fp32", "fp32", "cpu")
    assert backend.options["variant"] == "fp32" and backend.options["inference_precision"] == "f32"
    backend.close()
    with pytest.raises(BackendClosedError, match="was closed"):
        backend.infer(np.zeros((1, 3, 300, 300), np.float32))


def test_torch_backend_provides_the_protocol_and_close_ends_it(runtime_checkpoint):
    backend = backend_class("torch").load(runtime_checkpoint)
    _check_instance(backend, "torch")
    assert (backend.path, backend.variant, backend.end2end, backend.precision) == (runtime_checkpoint, None, None, "fp32")
    assert backend.options == {"fp16": False, "channels_last": False, "cuda_graph": False}
    assert backend_class("torch").load(runtime_checkpoint, fp16=True).precision == "fp16"
    backend.close()
    with pytest.raises(BackendClosedError, match="was closed"):
        backend.infer(np.zeros((1, 3, 300, 300), np.float32))


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
    a = fp32.fractional_detections(fp32.prepare(images).pixels, settings)
    b = uint8.fractional_detections(uint8.prepare(images).pixels, settings)
    comparison = compare_detections(a, b, settings)
    assert comparison.identical, comparison.mismatches[:5]
