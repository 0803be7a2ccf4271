"""What a quantizer is: its inputs (:class:`QuantizeJob`) and what it provides (:class:`Quantizer`).

A quantizer turns the fp32 toolkit ONNX into a Q/DQ ONNX and nothing more: it declares what it records
(name, version, settings) and what it keeps in float by its own rule, and writes its graph to a path.
Everything after that (head-output Q/DQ taken off, the search's Convs in float, metadata and spec,
TensorRT's rules, the ONNX checker, the parity, the report, the atomic write) is the one finishing
pipeline of :func:`ssd_export.int8.quantize.quantize_int8`, the same for every quantizer. The
quantizers are :class:`ssd_export.int8.ort.OrtQuantizer` and
:class:`ssd_export.int8.modelopt.ModelOptQuantizer`, chosen in one table
(:data:`ssd_export.int8.quantize.QUANTIZER_TABLE`).
"""
from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import onnx

from ssd_export.qdq_rules import FloatRegions

__all__ = ["QuantizeJob", "Quantizer", "quiet"]


@dataclass(frozen=True)
class QuantizeJob:
    """One quantization's inputs, checked by :func:`~ssd_export.int8.quantize.quantize_int8`.

    source_path: the fp32 toolkit ONNX, ``source`` loaded; input_name: its image input; method: the
    calibration method (``max``, ``entropy``, ``percentile``) with ``percentile``; batch_size: images per
    calibration step (a static-batch model's own batch); batches: float32 (B, 3, S, S) normalized RGB from
    :meth:`ssd_export.int8.calibration.CalibrationSet.batches`, read lazily, ``num_batches`` of them used
    (only full ones for a static batch); exclude: the caller's nodes kept in float; regions: the float
    parts found by structure (:func:`ssd_export.qdq_rules.float_regions`).
    """

    source_path: Path
    source: onnx.ModelProto
    input_name: str
    method: str
    percentile: float
    batch_size: int
    batches: Iterator[np.ndarray]
    num_batches: int
    exclude: tuple[str, ...]
    regions: FloatRegions

    @property
    def excluded(self) -> list[str]:
        """The nodes a quantizer must leave in float: the conv4_3 L2 norm, the output tail, the caller's."""
        return [*self.regions.l2_norm, *self.regions.tail, *self.exclude]


class Quantizer(Protocol):
    """One quantizer: made for a calibration method (``Quantizer(method)``, :class:`Int8Error` when it cannot
    run here or lacks the method), then asked for its settings and its graph.

    searchable: whether the sensitive-layer search can work on its graph (it reads ONNX Runtime's);
    name, version: recorded as the quantizer in the metadata, the spec's provenance and the report.
    """

    searchable: ClassVar[bool]
    name: str
    version: str

    def __init__(self, method: str) -> None: ...

    def float_convs(self, job: QuantizeJob) -> list[str]:
        """Convs this quantizer keeps in float by its own rule (exempt from the rule that every Conv is quantized)."""
        ...

    def settings(self, job: QuantizeJob, float_convs: list[str]) -> dict[str, Any]:
        """The settings recorded in the model (metadata, provenance) and the report."""
        ...

    def quantize(self, job: QuantizeJob, output: Path) -> tuple[int, int]:
        """Write the Q/DQ graph of ``job.source_path`` to ``output``; return (calibration images, batches) used."""
        ...


@contextlib.contextmanager
def quiet(*, stderr: bool = False) -> Iterator[None]:
    """Silence a quantizer's prints (stdout; with ``stderr``, its progress bars too) and root-logger warnings;
    its errors still arrive as exceptions."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.ExitStack() as stack:
            if stderr:
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            yield
    finally:
        logging.disable(previous)
