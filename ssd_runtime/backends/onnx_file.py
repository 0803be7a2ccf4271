"""What every backend over a toolkit ONNX file knows from the file alone, written once for all of them.

:class:`OnnxFileBackend` is the base of the ONNX Runtime and OpenVINO backends: from the
:class:`~ssd_runtime.onnx_model.OnnxModelInfo` a subclass reads into ``self.info`` (with
:func:`~ssd_runtime.onnx_model.read_onnx_info`, before its runtime touches the file) it answers the
:class:`~ssd_runtime.backends.Backend` members ``spec``, ``variant``, ``end2end``, ``precision``,
``input_kind`` and ``output_kind`` (the variant's record in :data:`~ssd_runtime.variants.VARIANT_TABLE`),
and checks a batch against the graph's input (``batch_dim``: the subclass reads it from its runtime).

NumPy only: no onnx, onnxruntime or openvino import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ssd_runtime.onnx_model import End2EndConfig, OnnxModelInfo
from ssd_runtime.preprocess import InputError
from ssd_runtime.spec import ModelSpec
from ssd_runtime.variants import VARIANT_TABLE, Variant

__all__ = ["OnnxFileBackend"]


class OnnxFileBackend:
    """The facts of a toolkit ONNX file a backend reports, and its input check (see the module docstring).

    A subclass sets ``path``, ``info`` and ``batch_dim`` (int: a static batch; a name: dynamic).
    """

    path: Path
    info: OnnxModelInfo
    batch_dim: int | str

    @property
    def spec(self) -> ModelSpec:
        return self.info.spec

    @property
    def variant(self) -> str:
        return self.info.variant

    @property
    def end2end(self) -> End2EndConfig | None:
        """The settings baked into an end2end model; None for a raw one."""
        return self.info.end2end

    @property
    def record(self) -> Variant:
        """The variant's record: its input kind, outputs and precision."""
        return VARIANT_TABLE[self.info.variant]

    @property
    def precision(self) -> str:
        return self.record.precision

    @property
    def input_kind(self) -> str:
        return self.record.input_kind

    @property
    def output_kind(self) -> str:
        return self.record.output_kind

    def expected_shape(self, batch: int | str) -> tuple[int | str, ...]:
        size = self.spec.input_size
        return (batch, size, size, 3) if self.input_kind == "uint8-nhwc" else (batch, 3, size, size)

    def check_batch(self, shape: tuple[int, ...], dtype: Any) -> None:
        """Raise :class:`InputError` naming expected vs received shape/dtype unless the batch fits."""
        expected_dtype = np.uint8 if self.input_kind == "uint8-nhwc" else np.float32
        n = shape[0] if len(shape) == 4 else "N"
        ok = len(shape) == 4 and tuple(shape) == self.expected_shape(shape[0]) and np.dtype(dtype) == expected_dtype
        if isinstance(self.batch_dim, int) and len(shape) == 4 and shape[0] != self.batch_dim:
            raise InputError(
                f"{self.path} has a static batch of {self.batch_dim}; received a batch of {shape[0]} "
                "(re-export with a dynamic batch)"
            )
        if not ok:
            raise InputError(
                f"{self.path} ({self.variant}) expects {np.dtype(expected_dtype).name} {self.expected_shape(n)} "
                f"({self.input_kind}); received {np.dtype(dtype).name} {tuple(shape)}"
            )
