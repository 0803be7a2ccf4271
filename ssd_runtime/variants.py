"""The artifact contract, defined once: what each exported variant is, and what each precision is held to.

Two tables, read by the exporter, the engine builder, the Triton repository, the deploy, the parity
check, the backends and the evaluation (never retyped there):

- :data:`VARIANT_TABLE`: one :class:`Variant` per ONNX variant (``ssd300.variant`` in the ONNX
  ``metadata_props``, the ``variant`` of an engine's sidecar): its input kind, its graph outputs and
  whether they are raw network outputs or padded detections, the precision its network computes in,
  and whether it is made from another ONNX file (quantized) rather than exported from a checkpoint.
- :data:`PRECISIONS`: one :class:`Precision` per precision, its parity :class:`Tolerance` and its
  |delta mAP| target side by side.

The dicts other modules used before (``ssd_export.parity.TOLERANCES``, ``ssd_export.int8.quantize.INT8_PARITY``,
``ssd_runtime.evaluate.TARGET_POINTS``, ``VARIANT_PRECISION``) are views of these tables, built here.

NumPy only: no torch, onnx or onnxruntime, and nothing from ``ssd_train`` or ``ssd_export``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DETECTION_OUTPUTS",
    "OUTPUT_KINDS",
    "PRECISIONS",
    "RAW_OUTPUTS",
    "TARGET_POINTS",
    "TOLERANCES",
    "VARIANT_PRECISION",
    "VARIANT_TABLE",
    "Precision",
    "Tolerance",
    "Variant",
    "precision_record",
    "variant_record",
]

#: The raw network outputs, in this order: locs float32 (N, P, 4) encoded offsets, class_logits (N, P, C).
RAW_OUTPUTS = ("locs", "class_logits")
#: The padded detections of an end-to-end model, in this order (:mod:`ssd_runtime.end2end`).
DETECTION_OUTPUTS = ("boxes", "scores", "labels", "num_detections")


@dataclass(frozen=True)
class Variant:
    """One exported variant of the network.

    input_kind: "float32-nchw" (normalized float32 (N, 3, S, S)) | "uint8-nhwc" (uint8 RGB (N, S, S, 3),
        normalization inside the graph); the graph input is named ``images``.
    output_names: the graph's outputs, in order: :data:`RAW_OUTPUTS` or :data:`DETECTION_OUTPUTS`.
    output_kind: "raw" (locs, class_logits: the caller postprocesses) | "detections" (NMS inside).
    precision: the precision its network computes in (a key of :data:`PRECISIONS`); uint8-nhwc and
        end2end are FP32 networks.
    quantized: made from another ONNX file (``ssd-export int8``), not exported from a checkpoint.
    """

    name: str
    input_kind: str
    output_names: tuple[str, ...]
    output_kind: str
    precision: str
    quantized: bool = False


#: One record per variant; the order is the order the variants are listed in (``ssd-export onnx --variant``).
VARIANT_TABLE: dict[str, Variant] = {v.name: v for v in (
    Variant("fp32", "float32-nchw", RAW_OUTPUTS, "raw", "fp32"),
    Variant("fp16", "float32-nchw", RAW_OUTPUTS, "raw", "fp16"),
    Variant("uint8-nhwc", "uint8-nhwc", RAW_OUTPUTS, "raw", "fp32"),
    Variant("end2end", "float32-nchw", DETECTION_OUTPUTS, "detections", "fp32"),
    Variant("int8", "float32-nchw", RAW_OUTPUTS, "raw", "int8", quantized=True),
)}


#: The output kinds, in the order the variants name them: "raw" (:data:`RAW_OUTPUTS`), "detections"
#: (:data:`DETECTION_OUTPUTS`). Engine sidecars and backends declare one of these.
OUTPUT_KINDS: tuple[str, ...] = tuple(dict.fromkeys(v.output_kind for v in VARIANT_TABLE.values()))


def variant_record(name: str) -> Variant:
    """The :class:`Variant` called ``name``; ValueError naming the known ones otherwise."""
    if name not in VARIANT_TABLE:
        raise ValueError(f"unknown variant {name!r} (known: {', '.join(VARIANT_TABLE)})")
    return VARIANT_TABLE[name]


@dataclass(frozen=True)
class Tolerance:
    """How close a backend's raw outputs must be to the checkpoint's FP32 outputs, for one precision.

    An output passes when it is finite and ``allclose(actual, expected, rtol, atol_for(expected))``:
    the atol floor grows with the output's range, ``range_ulps * ulp * max|expected|``, because
    rounding error scales with the magnitude of the activations (a trained FP32 network differs from
    PyTorch by ~10 FP32 ulps of its range through summation order alone; FP16 networks with BatchNorm
    folded in reach 3e-3 of their range).

    identical_detections: identical detections at the detection and evaluation settings are
        required; when False they are reported, with a second comparison at this ``atol``.
    """

    precision: str
    rtol: float
    atol: float
    range_ulps: float
    ulp: float
    identical_detections: bool

    def atol_for(self, expected: np.ndarray) -> float:
        """The atol for one output: ``atol`` or ``range_ulps`` ulps of max|expected|, the larger."""
        return max(self.atol, self.range_ulps * self.ulp * float(np.abs(expected).max(initial=0.0)))

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "rtol": self.rtol, "atol": self.atol,
                "range_ulps": self.range_ulps, "identical_detections": self.identical_detections}


@dataclass(frozen=True)
class Precision:
    """One precision: its parity tolerance and its mAP target, side by side.

    tolerance: the parity :class:`Tolerance` of its raw outputs.
    checkpoint_parity: the tolerance holds against the FP32 checkpoint, so the parity check takes the
        precision by name (``ssd_export.parity.TOLERANCES``). False for int8: its tolerance bounds the
        INT8 arithmetic against its source ONNX and is reported, never judged, against the checkpoint.
    target_points: the |delta mAP| target in points against the checkpoint; None where the precision
        is judged by another precision's target (tf32: an FP32 engine built with TF32 is an fp32 artifact).
    """

    name: str
    tolerance: Tolerance
    checkpoint_parity: bool
    target_points: float | None


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision(
        "fp32",
        Tolerance("fp32", rtol=1e-3, atol=1e-5, range_ulps=32, ulp=2.0**-23, identical_detections=True),
        checkpoint_parity=True, target_points=0.05,
    ),
    # FP16 locs error, in FP16 ulps of the output's range, measured on cpu-quick models: 6.3 trained
    # (3200 iterations), 10.4 at 100 iterations, 12.8 at 40 (BatchNorm folded in: undertrained models
    # carry larger activations). 16 passes all three; a broken FP16 graph (the conv4_3 norm overflowing
    # to inf) errs ~44x more. Accuracy itself is judged by the mAP delta (target 0.1 points).
    Precision(
        "fp16",
        Tolerance("fp16", rtol=2e-2, atol=2e-2, range_ulps=16, ulp=2.0**-11, identical_detections=False),
        checkpoint_parity=True, target_points=0.1,
    ),
    # An FP32 engine built with TensorRT's TF32 (ssd-export engine --tf32): convolution inputs and weights
    # rounded to 10-bit mantissas, ulp 2**-10. Error in TF32 ulps of the output's range, CPU emulation
    # (benchmarks/tf32_emulation.py, 8 verification scenes; worst of locs and class_logits): truncating
    # the 13 low bits 12.1 on the test model (14 Adam steps), 21.0 on cpu-quick at 100 iterations;
    # rounding to nearest 0.53 and 2.9. 32 covers truncation, the worse rounding, with 1.5x headroom
    # (FP32's range floor, 32 FP32 ulps, is ~1/3000 of it: TF32 engines fail FP32's check). Accuracy: by mAP.
    Precision(
        "tf32",
        Tolerance("tf32", rtol=2e-2, atol=2e-2, range_ulps=32, ulp=2.0**-10, identical_detections=False),
        checkpoint_parity=True, target_points=None,
    ),
    # The reported (never judged) parity of the INT8 model with its fp32 source: atol of two INT8 steps of
    # each output's range; detections compared, not required identical.
    Precision(
        "int8",
        Tolerance("int8", rtol=0.1, atol=0.05, range_ulps=2, ulp=2.0**-7, identical_detections=False),
        checkpoint_parity=False, target_points=0.5,
    ),
)}


def precision_record(name: str) -> Precision:
    """The :class:`Precision` called ``name``; ValueError naming the known ones otherwise."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r} (known: {', '.join(PRECISIONS)})")
    return PRECISIONS[name]


#: Precision (key of :data:`PRECISIONS`) of each variant.
VARIANT_PRECISION: dict[str, str] = {v.name: v.precision for v in VARIANT_TABLE.values()}
#: Parity tolerance by precision, for the precisions checked against the checkpoint by name (not int8).
TOLERANCES: dict[str, Tolerance] = {p.name: p.tolerance for p in PRECISIONS.values() if p.checkpoint_parity}
#: |delta mAP| targets in points, by precision (fp32, fp16, int8).
TARGET_POINTS: dict[str, float] = {p.name: p.target_points for p in PRECISIONS.values() if p.target_points is not None}
