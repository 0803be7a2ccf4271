"""How far the test models' FP16 and INT8 outputs stray from FP32 in ONNX Runtime, per CPU kernel path (JSON).

The tests' tolerances for reduced-precision models must hold on every CPU a user or CI has, and ONNX
Runtime picks its INT8 kernels by instruction set (AVX2, AVX-512 VNNI, AMX). This measures the spread
those tolerances are derived from, in two stages:

1. ``--build DIR``: the tests' briefly trained model (tests/helpers/training.py, tests/conftest.py's
   recipe) at several step counts, each exported to FP32 and FP16 ONNX and quantized to INT8 (MinMax, 8
   calibration images), beside the tests' generated 8-image test split. Needs torch. Run it once more with
   ``--tag avx2`` under ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``
   to add a model trained through other torch kernels, as another CPU trains it.
2. ``--measure DIR``: every model in ONNX Runtime on the 8 test images: FP16 and INT8 raw outputs against
   FP32 (mean and max absolute difference as a fraction of the output's range, max |FP32|), the top
   detection's score difference, and the mAP delta (VOC07 11-point, evaluation settings). No torch, so it
   also runs under an emulated CPU, which is how another kernel path is measured on one machine:
   ``NPY_DISABLE_CPU_FEATURES=X86_V3 qemu-x86_64 -cpu Haswell .venv/bin/python -m benchmarks.kernel_spread
   --measure DIR`` (AVX2 and FMA, no AVX-512, no VNNI; Debian's ``qemu-user`` 7.2; about 15 minutes for 8
   models). NumPy's own AVX2 kernels are switched off there because qemu 7.2 emulates one of them wrongly:
   NumPy's AVX2 ``argsort`` returns unsorted indices under it (checked against the native AVX2 path,
   ``NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"`` on an AVX-512 machine, which sorts
   correctly); ONNX Runtime's kernels still see AVX2. The JSON names the SIMD features CPUID reported
   (NumPy's detection) and the NumPy kernels switched off; its ``cpu`` (lscpu) is the host's, which
   qemu-user passes through.

    python -m benchmarks.kernel_spread --build /tmp/spread --steps 4,8,14,20,40
    python -m benchmarks.kernel_spread --measure /tmp/spread [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import cpu_facts, print_report

#: The SIMD features that select ONNX Runtime's (MLAS) INT8 and FP32 kernels on x86, as NumPy's CPUID table
#: names them (it has no AVX-VNNI or AMX entry: the JSON's cpu facts from lscpu name those).
KERNEL_FEATURES = ("AVX2", "FMA3", "AVX512F", "AVX512BW", "AVX512VNNI", "AVX512FP16", "AVX512_SPR")


def build(folder: Path, steps: list[int], tag: str) -> list[str]:
    """Train, export and quantize one test model per step count into ``folder/s{steps}{tag}``."""
    from ssd_export.int8.calibration import build_manifest, write_manifest
    from ssd_export.int8.quantize import quantize_int8
    from ssd_export.onnx.export import export_onnx
    from ssd_runtime.onnx_model import read_onnx_info
    from ssd_train.synthetic import generate_voc_dataset
    from tests.helpers.training import session_checkpoint

    data = folder / "data"
    if not data.exists():
        generate_voc_dataset(data, images=24, test=8)  # the tests' voc_root
    built = []
    for count in steps:
        out = folder / f"s{count}{tag}"
        out.mkdir(parents=True, exist_ok=True)
        checkpoint = session_checkpoint(data, out / "model.pt", steps=count)
        export_onnx(checkpoint, out / "fp32.onnx", verify=False)
        export_onnx(checkpoint, out / "fp16.onnx", variant="fp16", verify=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fewer than the recommended 500 calibration images
            manifest = build_manifest(data, split="trainval", images=8, seed=0,
                                      spec=read_onnx_info(out / "fp32.onnx").spec)
        quantize_int8(out / "fp32.onnx", write_manifest(manifest, out / "calibration.json"), out / "int8.onnx",
                      parity=False)
        built.append(out.name)
    return built


def _features() -> dict:
    """What CPUID reports (NumPy's detection) and which of NumPy's own kernels were switched off."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return {"cpuid": {name: bool(__cpu_features__.get(name, False)) for name in KERNEL_FEATURES},
            "numpy_disabled": os.environ.get("NPY_DISABLE_CPU_FEATURES", "")}


def measure(folder: Path) -> dict:
    """Every model of ``folder`` (see :func:`build`) in ONNX Runtime: FP16 / INT8 against FP32."""
    import onnxruntime

    from ssd_runtime.backends.onnxruntime import OrtBackend
    from ssd_runtime.detector import Detector
    from ssd_runtime.evaluate import map_of_detector_on_records
    from ssd_runtime.voc import read_voc_split

    data = folder / "data"
    models = {}
    for model_dir in sorted(p for p in folder.iterdir() if (p / "int8.onnx").is_file()):
        fp32 = Detector(OrtBackend(model_dir / "fp32.onnx"))
        records = read_voc_split(data, "test", fp32.spec.class_names)
        images = [record.image_path for record in records]
        pixels = fp32.prepare(images).pixels
        expected = [np.asarray(o, np.float64) for o in fp32.infer(pixels)]
        expected_top = [d.scores[0] if len(d) else 0.0 for d in fp32.detect(images)]
        fp32_map = map_of_detector_on_records(fp32, records)[0].map
        row: dict = {"fp32_map_points": fp32_map * 100}
        for variant in ("fp16", "int8"):
            detector = Detector(OrtBackend(model_dir / f"{variant}.onnx"))
            actual = [np.asarray(o, np.float64) for o in detector.infer(pixels)]
            entry: dict = {}
            for name, a, e in zip(("locs", "class_logits"), actual, expected):
                diff = np.abs(a - e)
                scale = float(np.abs(e).max())
                entry[name] = {"mean_of_range": float(diff.mean()) / scale, "max_of_range": float(diff.max()) / scale,
                               "range": scale}
            top = [d.scores[0] if len(d) else 0.0 for d in detector.detect(images)]
            entry["top_score_max_diff"] = float(np.abs(np.subtract(top, expected_top)).max())
            entry["map_delta_points"] = (map_of_detector_on_records(detector, records)[0].map - fp32_map) * 100
            row[variant] = entry
        models[model_dir.name] = row
    return {"benchmark": "kernel_spread", "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0], "cpu": cpu_facts(), "simd_seen": _features(), "images": len(images),
            "models": models}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stage = parser.add_mutually_exclusive_group(required=True)
    stage.add_argument("--build", type=Path, metavar="DIR", help="train, export and quantize the test models")
    stage.add_argument("--measure", type=Path, metavar="DIR", help="measure every model built in DIR")
    parser.add_argument("--steps", default="4,8,14,20,40", help="training steps of each model (--build)")
    parser.add_argument("--tag", default="", help="suffix of the model folders (--build), e.g. avx2")
    parser.add_argument("--out", help="also write the JSON here (--measure)")
    args = parser.parse_args(argv)
    if args.build:
        print(json.dumps({"built": build(args.build, [int(s) for s in args.steps.split(",")], args.tag)}))
        return 0
    print_report(measure(args.measure), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
