"""Choices and defaults of the export API, in one place for the library and the ``ssd-export`` CLI.

No imports beyond the runtime's ONNX metadata module (no torch, onnx or onnxruntime), so the CLI can
build its parser from these without loading the exporter.
"""
from __future__ import annotations

from ssd_runtime.onnx_model import VARIANTS

#: ONNX opset of every export (see :mod:`ssd_export.onnx.export` for why 19).
DEFAULT_OPSET = 19
#: torch.onnx exporters: the TorchScript one (default) and the dynamo one.
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_EXPORTER = EXPORTERS[0]
#: Graph variants (:data:`ssd_runtime.onnx_model.VARIANT_IO`); the default exports raw FP32 outputs.
DEFAULT_VARIANT = "fp32"
#: Batch size the dynamic-batch graph is traced at (verification runs at another one).
TRACE_BATCH = 2
#: Per-image cap on (class, prior) candidates entering the end-to-end NMS: TensorRT's TopK limit
#: (k <= 3840), under its NMS layer's 5000.
DEFAULT_MAX_CANDIDATES = 3840
#: The spec's named settings an end2end graph can bake in (``ssd-export onnx --end2end-settings``).
END2END_SETTINGS = ("detection", "evaluation")
#: Verification: batch size (for a dynamic batch) and the seed of the generated scenes (the tracing
#: and the test fixtures use other seeds).
DEFAULT_VERIFY_BATCH = 3
VERIFY_SEED = 20_250_101
#: INT8 calibration methods (``ssd-export int8 --method``): ONNX Runtime's MinMax, Entropy, Percentile.
INT8_METHODS = ("max", "entropy", "percentile")
#: Entropy by default: on the cpu-quick model (test mAP 0.6108) it lost 0.27 points, max 0.50 (at the
#: 0.5-point target's edge) and percentile 99.99 0.64, all with the 500-image calibration set.
DEFAULT_INT8_METHOD = "entropy"
#: INT8 quantizers (``ssd-export int8 --quantizer``): ONNX Runtime's ``quantize_static`` (the default, in
#: every environment) and NVIDIA ModelOpt's ONNX quantizer (the ``modelopt`` extra, in its own environment).
QUANTIZERS = ("onnxruntime", "modelopt")
DEFAULT_QUANTIZER = QUANTIZERS[0]
#: Percentile of |activation| kept by the percentile method (ONNX Runtime's own default is 99.999).
DEFAULT_PERCENTILE = 99.99
#: Sensitive-layer search (``ssd-export int8 --max-drop``): trials after the baseline (1, 2, 4, 8 Convs
#: kept in float), held-out images of the training split for the mAP (the first DEFAULT_PROXY_IMAGES of
#: them score each Conv), the held-out split and the seed of its choice.
DEFAULT_MAX_TRIALS = 4
DEFAULT_HOLDOUT_IMAGES = 200
DEFAULT_PROXY_IMAGES = 8
HOLDOUT_SPLIT = "trainval"
HOLDOUT_SEED = 0
#: Triton model repository (``ssd-export triton``): the model clients call (the network and the Python
#: postprocess are ``<name>_network`` and ``<name>_postprocess``).
DEFAULT_TRITON_NAME = "ssd300"
#: max_batch_size of a dynamic-batch ONNX model (an engine's comes from its profile): eight 300x300
#: images are 8.6 MB of float32 input per batch.
DEFAULT_TRITON_MAX_BATCH = 8
#: Dynamic batcher: wait at most this long for more requests. 100 us is an eighth of the network's batch-1
#: time on a GPU (0.81 ms in FP16 on an H200, BENCHMARKS.md) and nothing against ~200 ms on a 2-core CPU; tune
#: it with perf_analyzer.
DEFAULT_TRITON_QUEUE_DELAY_US = 100
#: ``ssd-export deploy``: the artifacts it can build (``engines``: a TensorRT engine of each ONNX artifact
#: in ENGINE_SOURCES, where TensorRT and a GPU exist), those it builds by default, and the engine modes.
DEPLOY_ARTIFACTS = ("fp32", "fp16", "uint8-nhwc", "int8", "end2end", "engines")
DEFAULT_DEPLOY_ARTIFACTS = ("fp32", "fp16", "int8", "end2end", "engines")
ENGINE_SOURCES = ("fp32", "fp16", "int8", "end2end")
ENGINE_MODES = ("auto", "skip", "require")
DEFAULT_ENGINE_MODE = "auto"
#: Test images whose detections each artifact draws.
DEFAULT_DRAW_IMAGES = 3

#: ``ssd-export engine``: the optimisation profile of a dynamic-batch ONNX (min, opt, max; TensorRT tunes
#: its kernels for opt). 16 bounds the activations on small GPUs: each of the two full-resolution
#: convolutions of SSD300 outputs 16 x 64 x 300 x 300 float32 = 369 MB at batch 16.
DEFAULT_ENGINE_BATCH = (1, 8, 16)
#: TensorRT's builder optimisation levels (``--optimization-level``; TensorRT's default is 3).
OPTIMIZATION_LEVELS = range(6)

__all__ = [
    "DEFAULT_DEPLOY_ARTIFACTS",
    "DEFAULT_DRAW_IMAGES",
    "DEFAULT_ENGINE_BATCH",
    "DEFAULT_ENGINE_MODE",
    "DEFAULT_EXPORTER",
    "DEFAULT_HOLDOUT_IMAGES",
    "DEFAULT_INT8_METHOD",
    "DEFAULT_MAX_CANDIDATES",
    "END2END_SETTINGS",
    "DEFAULT_MAX_TRIALS",
    "DEFAULT_OPSET",
    "DEFAULT_PERCENTILE",
    "DEFAULT_PROXY_IMAGES",
    "DEFAULT_QUANTIZER",
    "DEFAULT_TRITON_MAX_BATCH",
    "DEFAULT_TRITON_NAME",
    "DEFAULT_TRITON_QUEUE_DELAY_US",
    "DEFAULT_VARIANT",
    "DEFAULT_VERIFY_BATCH",
    "DEPLOY_ARTIFACTS",
    "ENGINE_MODES",
    "ENGINE_SOURCES",
    "EXPORTERS",
    "HOLDOUT_SEED",
    "HOLDOUT_SPLIT",
    "INT8_METHODS",
    "OPTIMIZATION_LEVELS",
    "QUANTIZERS",
    "TRACE_BATCH",
    "VARIANTS",
    "VERIFY_SEED",
]
