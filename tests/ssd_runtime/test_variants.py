"""The artifact contract (ssd_runtime.variants) against the real exports, and the precision table's values."""
from __future__ import annotations

import onnx
import pytest

from ssd_runtime.backends.onnxruntime import OrtBackend
from ssd_runtime.detector import Detector
from ssd_runtime import engine_sidecar
from ssd_runtime.engine_sidecar import SOURCE_VARIANTS
from ssd_runtime.evaluate import precision_of
from ssd_runtime.onnx_model import QUANTIZED_VARIANTS, VARIANT_IO, VARIANTS, read_onnx_info
from ssd_runtime.variants import (
    DETECTION_OUTPUTS,
    OUTPUT_KINDS,
    PRECISIONS,
    RAW_OUTPUTS,
    TARGET_POINTS,
    TOLERANCES,
    VARIANT_PRECISION,
    VARIANT_TABLE,
    precision_record,
    variant_record,
)

#: The values each precision was held to before the table existed (parity.TOLERANCES, int8.INT8_PARITY,
#: evaluate.TARGET_POINTS): (rtol, atol, range_ulps, ulp, identical_detections), target in points.
PREVIOUS = {
    "fp32": ((1e-3, 1e-5, 32, 2.0**-23, True), 0.05),
    "fp16": ((2e-2, 2e-2, 16, 2.0**-11, False), 0.1),
    "tf32": ((2e-2, 2e-2, 32, 2.0**-10, False), None),
    "int8": ((0.1, 0.05, 2, 2.0**-7, False), 0.5),
}


@pytest.mark.parametrize("name", list(VARIANT_TABLE))
def test_each_variant_record_matches_its_export(name, engine_sources):
    record = VARIANT_TABLE[name]
    path = engine_sources[name]
    assert read_onnx_info(path).variant == name
    backend = OrtBackend(path)
    assert backend.input_kind == record.input_kind
    assert [o.name for o in backend.session.get_outputs()] == list(record.output_names) == backend.output_names
    assert backend.output_kind == record.output_kind
    assert ("detections" if record.output_names == DETECTION_OUTPUTS else "raw") == record.output_kind
    nodes = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ("QuantizeLinear" in nodes) is record.quantized
    assert precision_of(Detector.load(path)) == record.precision == backend.precision


def test_variant_table_is_the_one_list_of_variants():
    assert list(VARIANT_TABLE) == ["fp32", "fp16", "uint8-nhwc", "end2end", "int8"]
    assert set(VARIANTS) | set(QUANTIZED_VARIANTS) == set(VARIANT_TABLE) == set(SOURCE_VARIANTS)
    assert QUANTIZED_VARIANTS == ("int8",)
    assert VARIANT_PRECISION == {"fp32": "fp32", "fp16": "fp16", "uint8-nhwc": "fp32", "end2end": "fp32",
                                 "int8": "int8"}
    assert VARIANT_IO["uint8-nhwc"] == (("images", "uint8", "NHWC"), RAW_OUTPUTS)
    assert VARIANT_IO["end2end"] == (("images", "float32", "NCHW"), ("boxes", "scores", "labels", "num_detections"))
    assert all(v.precision in PRECISIONS for v in VARIANT_TABLE.values())
    assert OUTPUT_KINDS == ("raw", "detections") and {v.output_kind for v in VARIANT_TABLE.values()} == set(OUTPUT_KINDS)


def test_engine_sidecars_read_their_vocabularies_from_the_variant_table():
    assert engine_sidecar.SOURCE_VARIANTS == tuple(VARIANT_TABLE) and engine_sidecar.OUTPUT_KINDS is OUTPUT_KINDS
    assert engine_sidecar.PRECISIONS == ("fp32", "fp16", "int8")  # what the sidecars have always accepted
    assert variant_record("int8").quantized
    with pytest.raises(ValueError, match="unknown variant 'fp64'.*fp32, fp16"):
        variant_record("fp64")


@pytest.mark.parametrize("name", list(PREVIOUS))
def test_each_precision_keeps_its_tolerance_and_target(name):
    (rtol, atol, range_ulps, ulp, identical), target = PREVIOUS[name]
    precision = precision_record(name)
    tol = precision.tolerance
    assert (tol.precision, tol.rtol, tol.atol, tol.range_ulps, tol.ulp, tol.identical_detections) == (
        name, rtol, atol, range_ulps, ulp, identical)
    assert precision.target_points == target


def test_precision_views_are_the_previous_dicts():
    assert list(PRECISIONS) == ["fp32", "fp16", "tf32", "int8"]
    assert TARGET_POINTS == {"fp32": 0.05, "fp16": 0.1, "int8": 0.5}
    assert list(TOLERANCES) == ["fp32", "fp16", "tf32"]  # int8's is passed as a Tolerance, never by name
    assert all(TOLERANCES[k] is PRECISIONS[k].tolerance for k in TOLERANCES)
    with pytest.raises(ValueError, match="unknown precision 'bf16'"):
        precision_record("bf16")


def test_old_homes_read_the_table():
    from ssd_export import parity
    from ssd_export.deploy import run as deploy
    from ssd_export.onnx import verify
    from ssd_export.tensorrt import engine
    from ssd_export.tensorrt.check import engine_tolerance
    from ssd_export.int8.quantize import INT8_PARITY
    from ssd_runtime import evaluate

    assert parity.TOLERANCES is TOLERANCES and evaluate.TARGET_POINTS is TARGET_POINTS
    assert INT8_PARITY is PRECISIONS["int8"].tolerance
    assert engine.VARIANT_PRECISION is verify.VARIANT_PRECISION is deploy.VARIANT_PRECISION is VARIANT_PRECISION
    assert engine_tolerance("int8") is INT8_PARITY
    assert engine_tolerance("fp32", tf32=True) is TOLERANCES["tf32"]
    assert engine_tolerance("fp16", tf32=True) is TOLERANCES["fp16"]
