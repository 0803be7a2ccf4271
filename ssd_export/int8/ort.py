"""INT8 through ONNX Runtime's ``quantize_static`` (``ssd-export int8 --quantizer onnxruntime``, the default).

:class:`OrtQuantizer` runs ``quantize_static`` with the settings TensorRT needs (``docs/export.md``, "INT8"):

- ``QuantFormat.QDQ``, activations and weights ``QInt8``, ``per_channel=True``, ``extra_options``
  ``ActivationSymmetric`` / ``WeightSymmetric`` (every zero point 0) and ``QuantizeBias=False`` (biases stay
  float32: TensorRT's DequantizeLinear takes no INT32);
- calibration ``MinMax`` (``max``), ``Entropy`` or ``Percentile`` (``--percentile``), fed one batch at a
  time (``CalibStridedMinMax=1``, which bounds the memory of every method) from
  :meth:`ssd_export.int8.calibration.CalibrationSet.batches` - hash-checked images, preprocessed by the
  runtime exactly as at inference;
- kept in float (``nodes_to_exclude``, found by structure in :mod:`ssd_export.qdq_rules`): the conv4_3 L2
  norm and its rescale, and the ``Transpose/Reshape/Concat`` tail after the heads. ORT also puts a Q/DQ
  pair on every Conv output; the finishing pipeline (:func:`ssd_export.int8.quantize.quantize_int8`) takes
  the pairs on the head convs' outputs off, as it does for every quantizer.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from ssd_export.int8.quantizer import QuantizeJob, quiet
from ssd_export.qdq_rules import TENSORRT_QDQ, FloatRegions

__all__ = ["QUANTIZER", "OrtQuantizer", "quantizer_settings"]

#: The quantizer's name as recorded in the model and the report.
QUANTIZER = "onnxruntime.quantization"
_CALIBRATE_METHODS = {"max": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}


def quantizer_settings(method: str, percentile: float, exclude: Sequence[str], regions: FloatRegions) -> dict[str, Any]:
    """The quantization settings as recorded in the model (metadata, provenance) and the report."""
    settings: dict[str, Any] = {
        **TENSORRT_QDQ,
        "method": method,
        "calibrate_method": _CALIBRATE_METHODS[method].name,
        "calibration_batches_per_step": 1,
        "excluded_nodes": {**regions.to_dict(), "user": list(exclude)},
    }
    if method == "percentile":
        settings["percentile"] = percentile
    return settings


class OrtQuantizer:
    """ONNX Runtime's ``quantize_static`` as a :class:`~ssd_export.int8.quantizer.Quantizer` (every method)."""

    searchable: ClassVar[bool] = True  # the search's surgery reads this graph's float weights

    def __init__(self, method: str) -> None:
        self.name = QUANTIZER
        self.version = onnxruntime.__version__

    def float_convs(self, job: QuantizeJob) -> list[str]:
        return []  # ORT quantizes every Conv it is not told to exclude

    def settings(self, job: QuantizeJob, float_convs: list[str]) -> dict[str, Any]:
        return quantizer_settings(job.method, job.percentile, job.exclude, job.regions)

    def quantize(self, job: QuantizeJob, output: Path) -> tuple[int, int]:
        reader = _BatchReader(job.batches, job.input_name, job.num_batches)
        with quiet():  # quantize_static's root-logger warnings, the histogram collector's prints
            quantize_static(
                str(job.source_path), str(output), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=_CALIBRATE_METHODS[job.method], nodes_to_exclude=job.excluded,
                extra_options=_extra_options(job.method, job.percentile),
            )
        return reader.images, reader.batches


def _extra_options(method: str, percentile: float) -> dict[str, Any]:
    options: dict[str, Any] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "CalibStridedMinMax": 1,  # one batch per calibration step: memory bounded for every method
    }
    if method == "percentile":
        options["CalibPercentile"] = percentile
    return options


class _BatchReader(CalibrationDataReader):
    """Calibration batches for ``quantize_static``, consumed lazily, ``set_range`` steps at a time.

    ``batches`` yields float32 (N, 3, S, S) normalized RGB; a static-batch model gets only full batches
    (``count`` of them).
    """

    def __init__(self, batches: Iterator[np.ndarray], input_name: str, count: int) -> None:
        self._batches = batches
        self._input_name = input_name
        self._count = count
        self._left = count
        self.images = 0
        self.batches = 0

    def __len__(self) -> int:
        return self._count

    def set_range(self, start_index: int, end_index: int) -> None:
        self._left = min(end_index, self._count) - start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._left <= 0 or self.batches >= self._count:
            return None
        batch = next(self._batches, None)
        if batch is None:
            return None
        self._left -= 1
        self.batches += 1
        self.images += len(batch)
        return {self._input_name: batch}
