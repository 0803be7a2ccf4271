"""INT8 through NVIDIA ModelOpt's ONNX quantizer (``ssd-export int8 --quantizer modelopt``): an optional extra.

``nvidia-modelopt[onnx]`` pulls ``onnxruntime-gpu`` in beside ``onnxruntime`` and pins an older ``onnx``, so
it lives in its own environment (``pip install 'ssd300-toolkit[modelopt]'``), never in CI's; this module imports
ModelOpt only when that quantizer is asked for (:func:`load_modelopt`), and says so when ModelOpt is missing.

:func:`quantize_modelopt` runs ``modelopt.onnx.quantization.quantize`` with the settings TensorRT needs:
``quantize_mode="int8"`` (symmetric INT8, per-channel weights, per-tensor activations, biases in float - ModelOpt's
own defaults), ``high_precision_dtype="fp32"`` (FP32 scales and the float parts left FP32: FP16 scales have failed
to build on Orin), ``dq_only=True`` (weights stored as INT8 initializers read through a per-channel
DequantizeLinear: the form :func:`~ssd_export.qdq_rules.check_qdq_rules` checks and ONNX Runtime's path writes;
ModelOpt's default keeps FP32 weights behind a QuantizeLinear/DequantizeLinear pair, which TensorRT folds
but the rules read as a per-channel activation Q), calibration ``max`` or ``entropy`` (ModelOpt has no percentile for INT8) on the CPU
(``calibration_eps=["cpu"]``), and the conv4_3 L2 norm and the output tail kept in float (``nodes_to_exclude``,
each name anchored and escaped: ModelOpt reads them as regular expressions). ModelOpt writes intermediate files
beside its input, so it runs on a copy in a temporary folder. :class:`ModelOptQuantizer` is this quantizer
for :func:`ssd_export.int8.quantize.quantize_int8`, whose finishing pipeline checks the graph with the same
TensorRT rules as ONNX Runtime's, and records the quantizer and its version.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import onnx

from ssd_export.int8.errors import Int8Error
from ssd_export.int8.quantizer import QuantizeJob, quiet
from ssd_export.qdq_rules import TENSORRT_QDQ, FloatRegions

__all__ = ["MODELOPT_METHODS", "QUANTIZER", "ModelOptMissing", "ModelOptQuantizer", "load_modelopt",
           "modelopt_float_convs", "modelopt_settings", "quantize_modelopt"]

QUANTIZER = "modelopt.onnx.quantization"
#: ModelOpt's INT8 calibration methods (no percentile).
MODELOPT_METHODS = ("max", "entropy")
INSTALL_HINT = ("pip install 'ssd300-toolkit[modelopt]' in an environment of its own (it pulls onnxruntime-gpu "
                "and an older onnx; keep it out of the CPU/CI environment)")


class ModelOptMissing(ImportError):
    """NVIDIA ModelOpt (``modelopt.onnx.quantization``) is not installed here."""


class ModelOptQuantizer:
    """ModelOpt's ONNX quantizer as a :class:`~ssd_export.int8.quantizer.Quantizer` (``max`` and ``entropy``)."""

    searchable: ClassVar[bool] = False  # the search's surgery reads ONNX Runtime's Q/DQ graph

    def __init__(self, method: str) -> None:
        """:class:`Int8Error` when ModelOpt is missing here or has no ``method`` calibration for INT8."""
        if method not in MODELOPT_METHODS:
            raise Int8Error(f"--quantizer modelopt has no {method!r} calibration for INT8 (ModelOpt offers "
                            f"{', '.join(MODELOPT_METHODS)}); use --method max or entropy, or --quantizer onnxruntime")
        try:
            _, self.version = load_modelopt()
        except ModelOptMissing as exc:
            raise Int8Error(str(exc)) from exc
        self.name = QUANTIZER

    def float_convs(self, job: QuantizeJob) -> list[str]:
        return modelopt_float_convs(job.source)

    def settings(self, job: QuantizeJob, float_convs: list[str]) -> dict[str, Any]:
        return modelopt_settings(job.method, job.batch_size, job.exclude, job.regions, float_convs)

    def quantize(self, job: QuantizeJob, output: Path) -> tuple[int, int]:
        return quantize_modelopt(job.source_path, output, job.batches, input_name=job.input_name,
                                 batch_size=job.batch_size, num_batches=job.num_batches, method=job.method,
                                 excluded=job.excluded)


def load_modelopt() -> tuple[ModuleType, str]:
    """(``modelopt.onnx.quantization``, ModelOpt's version); :class:`ModelOptMissing` when it cannot be imported."""
    try:
        import modelopt
        import modelopt.onnx.quantization as moq
    except ImportError as exc:
        raise ModelOptMissing(f"--quantizer modelopt needs NVIDIA ModelOpt, which is not importable here ({exc}): "
                              f"{INSTALL_HINT}") from exc
    return moq, str(getattr(modelopt, "__version__", "unknown"))


def modelopt_float_convs(model: onnx.ModelProto) -> list[str]:
    """The Convs ModelOpt itself keeps in float for INT8, by its own rule (``find_nodes_from_convs_to_exclude``).

    ModelOpt leaves a Conv with fewer than 16 input or output channels unquantized unless TensorRT has an
    INT8 kernel for it (a multiple of 8 channels and the first layer or 16+ channels on one side): in the
    width-scaled cpu-quick model that is ``conv1_2`` (8 -> 8); in the full-width SSD300 none. Asked of ModelOpt
    before quantizing, these names are declared float (rule 3 exempt, recorded as
    ``excluded_nodes.modelopt``), so any other unquantized Conv still breaks the rules.
    """
    import onnx_graphsurgeon as gs
    from modelopt.onnx.quantization.graph_utils import find_nodes_from_convs_to_exclude

    with quiet(stderr=True):
        return sorted(find_nodes_from_convs_to_exclude(gs.import_onnx(model), quantize_mode="int8"))


def modelopt_settings(method: str, batch_size: int, exclude: Sequence[str], regions: FloatRegions,
                      float_convs: Sequence[str] = ()) -> dict[str, Any]:
    """The ModelOpt quantization settings as recorded in the model (metadata, provenance) and the report."""
    return {
        **TENSORRT_QDQ,
        "quantize_mode": "int8",
        "high_precision_dtype": "fp32",
        "dq_only": True,
        "method": method,
        "calibrate_method": method,
        "calibration_eps": ["cpu"],
        "calibration_batch": batch_size,
        "excluded_nodes": {**regions.to_dict(), "user": list(exclude), "modelopt": list(float_convs)},
    }


def quantize_modelopt(
    onnx_path: Path,
    output: Path,
    batches: Iterable[np.ndarray],
    *,
    input_name: str,
    batch_size: int,
    num_batches: int,
    method: str,
    excluded: Sequence[str],
) -> tuple[int, int]:
    """Quantize ``onnx_path`` to ``output`` with ModelOpt; return (calibration images, batches) used.

    ``batches`` (float32 (B, 3, S, S), :meth:`ssd_export.int8.calibration.CalibrationSet.batches`) are read
    ``num_batches`` at most and concatenated into the one (N, 3, S, S) array ModelOpt takes, calibrated
    ``batch_size`` images per step.
    """
    moq, _ = load_modelopt()
    arrays = []
    for batch in batches:
        if len(arrays) >= num_batches:
            break
        arrays.append(np.ascontiguousarray(batch, dtype=np.float32))
    data = np.concatenate(arrays, axis=0)
    _, channels, height, width = data.shape
    with tempfile.TemporaryDirectory(prefix=".modelopt-", dir=output.parent) as work:
        source = Path(work) / "source.onnx"
        shutil.copyfile(onnx_path, source)
        quantized = Path(work) / "quantized.onnx"
        with quiet(stderr=True):  # ModelOpt's and ORT's prints, its calibration progress bars (tqdm, on stderr)
            moq.quantize(
                str(source), quantize_mode="int8", calibration_data=data, calibration_method=method,
                calibration_shapes=f"{input_name}:{batch_size}x{channels}x{height}x{width}",
                calibration_eps=["cpu"], nodes_to_exclude=[f"^{re.escape(n)}$" for n in excluded],
                high_precision_dtype="fp32", dq_only=True, output_path=str(quantized), log_level="WARNING",
            )
        shutil.move(str(quantized), str(output))
    return int(data.shape[0]), len(arrays)
