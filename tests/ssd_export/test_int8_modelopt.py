"""``ssd-export int8 --quantizer modelopt``: NVIDIA ModelOpt's Q/DQ graph under the same TensorRT rules,
its provenance, the runtime on it; the clear error where ModelOpt is missing.

ModelOpt pulls onnxruntime-gpu and an older onnx, so it is never in CI's environment: the tests marked
``modelopt`` skip there (``importorskip``) and run in an environment of their own::

    python -m venv /tmp/mo-venv && /tmp/mo-venv/bin/pip install -e '.[ort,train,export,dev,modelopt]'
    /tmp/mo-venv/bin/python -m pytest -q tests/ssd_export/test_int8_modelopt.py

The missing-ModelOpt tests are not marked: they hide ModelOpt (``sys.modules``) and run everywhere.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from ssd_export.cli import main as export_main
from ssd_export.int8.quantize import Int8Error, quantize_int8
from ssd_export.qdq_rules import check_qdq_rules, l2_norm_nodes, output_tail
from ssd_runtime.fileio import sha256_file
from ssd_runtime.onnx_model import META_VARIANT, read_onnx_info

MODELOPT_QUANTIZER = "modelopt.onnx.quantization"


@pytest.fixture(scope="module")
def manifest(calibration_manifest) -> Path:
    """The session's 8-image calibration set (tests/ssd_export/conftest.py)."""
    return calibration_manifest


@pytest.fixture(scope="module")
def modelopt_version() -> str:
    pytest.importorskip("modelopt.onnx.quantization")
    import modelopt

    return modelopt.__version__


@pytest.fixture(scope="module")
def modelopt_int8(modelopt_version, runtime_onnx, manifest, tmp_path_factory) -> dict:
    """The session's model quantized by ModelOpt (max calibration, 4 images a step), parity run."""
    out = tmp_path_factory.mktemp("int8_modelopt") / "modelopt.onnx"
    return quantize_int8(runtime_onnx, manifest, out, method="max", batch_size=4, quantizer="modelopt")


@pytest.fixture
def no_modelopt(monkeypatch):
    """ModelOpt made unimportable, whether or not it is installed."""
    for name in [m for m in sys.modules if m == "modelopt" or m.startswith("modelopt.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "modelopt", None)


# ------------------------------------------------------------------------------------- with ModelOpt


@pytest.mark.modelopt
def test_modelopt_graph_follows_tensorrt_rules(modelopt_int8):
    model = onnx.load(modelopt_int8["output"])
    assert modelopt_int8["rules"]["violations"] == []
    # ModelOpt's own small-channel Convs (fewer than 16 channels, no TensorRT INT8 kernel) are declared float;
    # without the declaration they, and only they, break rule 3
    small = modelopt_int8["settings"]["excluded_nodes"]["modelopt"]
    inits = {t.name: t for t in model.graph.initializer}
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    assert small and all(min(inits[convs[name].input[1]].dims[:2]) < 16 for name in small)
    assert check_qdq_rules(model, float_nodes=small) == []
    assert {v.split(":")[0] for v in check_qdq_rules(model)} == set(small)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    # FP32 scales (high_precision_dtype fp32), the whole float graph left FP32
    assert all(inits[n.input[1]].data_type == onnx.TensorProto.FLOAT for n in qdq if n.input[1] in inits)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)
    assert l2_norm_nodes(model) == [["/Pow", "/ReduceSum", "/Sqrt", "/Clip", "/Div", "/Mul"]]
    heads, _, qdq_after = output_tail(model)
    assert len(heads) == 12 and qdq_after == []


@pytest.mark.modelopt
def test_modelopt_provenance(modelopt_int8, modelopt_version, runtime_onnx, manifest):
    report = modelopt_int8
    assert report["quantizer"] == {"name": MODELOPT_QUANTIZER, "version": modelopt_version}
    settings = report["settings"]
    assert settings["method"] == "max" and settings["quantize_mode"] == "int8"
    assert settings["high_precision_dtype"] == "fp32" and settings["calibration_eps"] == ["cpu"]
    assert settings["excluded_nodes"]["l2_norm"] and settings["excluded_nodes"]["output_tail"]
    assert report["calibration"]["images"] == 8 and report["calibration"]["batches"] == 2
    info = read_onnx_info(report["output"])
    assert info.variant == "int8"
    meta = {p.key: p.value for p in onnx.load(report["output"]).metadata_props}
    assert meta[META_VARIANT] == "int8"
    prov = dict(info.spec.provenance)
    assert prov["quantizer"] == MODELOPT_QUANTIZER and prov["quantizer_version"] == modelopt_version
    assert prov["source_onnx_sha256"] == sha256_file(runtime_onnx)
    assert prov["calibration_manifest_sha256"] == sha256_file(manifest)
    assert json.loads(prov["quantization_settings"])["calibrate_method"] == "max"
    saved = json.loads(Path(report["report_path"]).read_text())
    assert saved["quantizer"]["name"] == MODELOPT_QUANTIZER
    # no intermediate file of ModelOpt's left beside the source or the output
    assert not [p.name for p in Path(report["output"]).parent.iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in Path(runtime_onnx).parent.glob("*.onnx")) == [Path(runtime_onnx).name]


@pytest.mark.modelopt
def test_modelopt_model_runs_in_the_runtime(modelopt_int8, voc_root):
    from ssd_runtime.backends.onnxruntime import OrtBackend
    from ssd_runtime.detector import Detector

    backend = OrtBackend(modelopt_int8["output"])
    assert backend.variant == "int8" and backend.input_kind == "float32-nchw"
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:3]
    detections = Detector.load(modelopt_int8["output"]).detect(images)
    assert len(detections) == 3
    assert all(np.isfinite(d.scores).all() for d in detections)
    assert modelopt_int8["parity"]["images"]  # the informative fp32 parity ran


@pytest.mark.modelopt
def test_modelopt_refuses_percentile(modelopt_version, runtime_onnx, manifest, tmp_path):
    with pytest.raises(Int8Error, match="no 'percentile' calibration"):
        quantize_int8(runtime_onnx, manifest, tmp_path / "p.onnx", method="percentile", quantizer="modelopt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.modelopt
def test_modelopt_cli(modelopt_version, runtime_onnx, manifest, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    rc = export_main(["int8", "--onnx", str(runtime_onnx), "--calibration", str(manifest), "-o", str(out),
                      "--quantizer", "modelopt", "--method", "entropy", "--no-parity", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quantizer"]["name"] == MODELOPT_QUANTIZER and report["settings"]["method"] == "entropy"
    assert check_qdq_rules(onnx.load(out), float_nodes=report["settings"]["excluded_nodes"]["modelopt"]) == []


# ---------------------------------------------------------------------------------- without ModelOpt


def test_missing_modelopt_is_a_clear_error(no_modelopt, runtime_onnx, manifest, tmp_path):
    with pytest.raises(Int8Error, match=r"pip install 'ssd300-toolkit\[modelopt\]'"):
        quantize_int8(runtime_onnx, manifest, tmp_path / "m.onnx", quantizer="modelopt")
    assert list(tmp_path.iterdir()) == []


def test_missing_modelopt_cli(no_modelopt, runtime_onnx, manifest, tmp_path, capsys):
    rc = export_main(["int8", "--onnx", str(runtime_onnx), "--calibration", str(manifest),
                      "-o", str(tmp_path / "m.onnx"), "--quantizer", "modelopt"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "ssd300-toolkit[modelopt]" in err and "own" in err
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_quantizer(runtime_onnx, manifest, tmp_path):
    with pytest.raises(Int8Error, match="unknown quantizer"):
        quantize_int8(runtime_onnx, manifest, tmp_path / "u.onnx", quantizer="tensorrt")


def test_search_is_onnxruntime_only(runtime_onnx, manifest, voc_root, tmp_path, capsys):
    rc = export_main(["int8", "--onnx", str(runtime_onnx), "--calibration", str(manifest), "-o", str(tmp_path / "s.onnx"),
                      "--quantizer", "modelopt", "--max-drop", "0.5", "--data", str(voc_root)])
    assert rc == 2 and "--quantizer onnxruntime" in capsys.readouterr().err
    with pytest.raises(Int8Error, match="sensitive-layer search"):
        quantize_int8(runtime_onnx, manifest, tmp_path / "s.onnx", quantizer="modelopt", search={"kept_float": []})
    assert list(tmp_path.iterdir()) == []
