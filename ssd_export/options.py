"""The options of ``ssd-export engine``, one table read by its parser and by the engine's rebuild command.

Each record's ``dest`` is the :func:`ssd_export.tensorrt.engine.build_engine` parameter it feeds and its
``parse`` gives that parameter's value (``--workspace`` MiB -> bytes, ``--device cuda:1`` -> 1), so the
CLI passes the parsed values straight on, and
:func:`ssd_export.tensorrt.engine.rebuild_command` writes a built engine's settings back through the
same records (:func:`ssd_runtime.options.to_argv`): a renamed flag renames both. Defaults are
``build_engine``'s own (its signature), read by both.

Standard library and ``ssd_runtime`` only: the engine module imports this.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ssd_runtime.engine_sidecar import HARDWARE_COMPATIBILITY
from ssd_runtime.options import BATCH_PROFILE, CHECKPOINT, DEVICE, MODEL, Option, cuda_device, device_index

from ssd_export.defaults import DEFAULT_ENGINE_BATCH, OPTIMIZATION_LEVELS

__all__ = ["ENGINE_OPTIONS"]


def _engine_device(text: str) -> int:
    """``cuda`` / ``cuda:N`` -> the device index ``build_engine`` takes; the old bare index with a note."""
    if text.isdigit():  # the grammar before the one vocabulary: --device 1
        print(f"ssd-export engine: --device {text} is deprecated and goes in the next release: use --device "
              f"{cuda_device(int(text))}", file=sys.stderr)
        return int(text)
    return device_index(text)


def _mib(text: str) -> int:
    """``--workspace`` MiB -> bytes (``build_engine``'s unit)."""
    return int(text) << 20


#: In the order the CLI lists them and a rebuild command writes them.
ENGINE_OPTIONS = (
    MODEL.but(dest="onnx_path", parse=Path, deprecated=("--onnx",),
              help="ONNX from ssd-export onnx / int8 (precision comes from it)"),
    Option(("-o", "--output"), "engine_path", "plan to write (e.g. ssd300.engine); sidecar: OUTPUT.json", parse=Path,
           metavar="OUTPUT", required=True),
    CHECKPOINT.but(parse=Path, help="check the engine against this checkpoint (default: against the ONNX in ONNX Runtime)"),
    BATCH_PROFILE.but(deprecated=("--batch",),
                      help="optimisation profile of a dynamic-batch ONNX (default "
                      f"{','.join(map(str, DEFAULT_ENGINE_BATCH))}); a static ONNX keeps its batch"),
    Option(("--fp16",), "fp16", "TensorRT 10 only: FP16 builder flag on a plain fp32 ONNX (TensorRT 11: export "
           "--variant fp16)", switch=True),
    Option(("--tf32",), "tf32", "let FP32 layers run in TF32 (TensorRT's default; faster on Ampere and newer, ~1e-3 "
           "relative error, checked against the TF32 tolerance, judge accuracy by mAP). Default: off for FP32 engines "
           "(fp32, uint8-nhwc, end2end), on for FP16/INT8 ones", negatable=True),
    DEVICE.but(parse=_engine_device, format=cuda_device, help="the CUDA device to build and check on: cuda or cuda:N "
               "(default cuda, GPU 0)"),
    Option(("--workspace",), "workspace", "workspace memory pool limit in MiB (default: TensorRT's, the GPU's memory)",
           parse=_mib, format=lambda nbytes: str(nbytes >> 20), metavar="MIB"),
    Option(("--timing-cache",), "timing_cache", "timing cache: read if present, written back (combined) after the build",
           parse=Path, metavar="FILE"),
    Option(("--version-compatible",), "version_compatible",
           "a plan later TensorRT versions load (a 10.x one also on 11.x); slower", switch=True),
    Option(("--hardware-compatibility",), "hardware_compatibility",
           "none (this GPU's architecture), ampere_plus, same_compute_capability (TensorRT 10.9+)",
           choices=HARDWARE_COMPATIBILITY),
    Option(("--optimization-level",), "optimization_level", "builder optimisation level 0-5 (default: TensorRT's, 3)",
           parse=int, choices=OPTIMIZATION_LEVELS),
)
