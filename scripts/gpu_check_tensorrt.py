"""The TensorRT checks a first GPU run must settle, in one run of a few minutes; one JSON object on stdout.

Run by scripts/gpu_check.py (time limit 300 s). Where ``import tensorrt`` fails, or TensorRT sees no
GPU, it prints ``{"skipped": "no tensorrt module ..."}`` and exits 0. Otherwise, on a small model
trained briefly here (the test suite's recipe: width 0.125, 14 Adam steps on 24 generated images):

- every variant (fp32, fp16, uint8-nhwc, end2end, int8 Q/DQ) built with TF32 off and on, each checked
  by ``ssd-export engine``'s own parity check (kept when it fails, so the report shows why);
- per engine built with TF32 off: whether CUDA graph capture works at batch sizes 1 and 3 (or fell
  back, with the reason), and the median latency of ``infer`` with and without graphs;
- the end2end engine timed like the others (its NMS layer is the known slow one on 10.0-10.6).

Usage (repository root): python scripts/gpu_check_tensorrt.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers.training, as the test suite trains its model

VARIANTS = ("fp32", "fp16", "uint8-nhwc", "end2end", "int8")
BATCHES = (1, 3)
REPEATS = 20


def skipped_reason() -> str | None:
    """Why the TensorRT checks cannot run here (None: they can)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"skipped: no tensorrt module ({exc})"
    from ssd_export.tensorrt.engine import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    return None if reason is None else f"skipped: {reason}"


def sources(folder: Path) -> tuple[Path, dict[str, Path]]:
    """A briefly trained checkpoint and the ONNX of every variant (the int8 one calibrated on 8 images)."""
    from ssd_export.int8.calibration import build_manifest, write_manifest
    from ssd_export.int8.quantize import quantize_int8
    from ssd_export.onnx.export import export_onnx
    from ssd_runtime.onnx_model import read_onnx_info
    from ssd_train.synthetic import generate_voc_dataset
    from tests.helpers.training import session_checkpoint

    root = folder / "voc"
    generate_voc_dataset(root, images=24, test=8)
    checkpoint = session_checkpoint(root, folder / "model.pt")
    onnx = {v: export_onnx(checkpoint, folder / f"{v}.onnx", variant=v, verify=False).output
            for v in VARIANTS if v != "int8"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer calibration images than recommended
        spec = read_onnx_info(onnx["fp32"]).spec
        manifest = write_manifest(build_manifest(root, split="trainval", images=8, seed=0, spec=spec),
                                  folder / "calibration.json")
    onnx["int8"] = Path(quantize_int8(onnx["fp32"], manifest, folder / "int8.onnx", parity=False)["output"])
    return checkpoint, onnx


def build(source: Path, out: Path, checkpoint: Path | None, tf32: bool, cache: Path) -> dict:
    """One ``build_engine`` with its check; the outcome as data (never raises for a TensorRT failure)."""
    from ssd_export.tensorrt.engine import EngineBuildError, EngineParityError, build_engine

    start = time.perf_counter()
    try:
        result = build_engine(source, out, checkpoint=checkpoint, tf32=tf32, timing_cache=cache, keep_failed=True)
        parity = result.parity
    except EngineParityError as exc:
        parity = exc.report
    except EngineBuildError as exc:
        return {"built": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                "seconds": round(time.perf_counter() - start, 1)}
    outputs = {name: {k: stats[k] for k in ("max_abs", "max_abs_expected", "allclose")}
               for name, stats in parity.get("outputs", {}).items()}
    return {"built": True, "passed": parity["passed"], "precision_checked": parity["precision"],
            "failures": parity["failures"][:5], "outputs": outputs, "seconds": round(time.perf_counter() - start, 1)}


def graphs_and_latency(engine: Path) -> dict:
    """CUDA graph capture at each batch size (or the fallback's reason); median ms of infer with and without."""
    import numpy as np

    from ssd_runtime.backends.tensorrt import TensorRTBackend

    result: dict = {}
    for graph in (False, True):
        backend = TensorRTBackend(engine, device="cuda", cuda_graph=graph)
        size = backend.spec.input_size
        shape = (size, size, 3) if backend.input_kind == "uint8-nhwc" else (3, size, size)
        dtype = np.uint8 if backend.input_kind == "uint8-nhwc" else np.float32
        try:
            for n in BATCHES:
                batch = np.zeros((n, *shape), dtype)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    backend.infer(batch)
                times = []
                for _ in range(REPEATS):
                    start = time.perf_counter()
                    backend.infer(batch)
                    times.append((time.perf_counter() - start) * 1e3)
                entry = result.setdefault(f"batch_{n}", {})
                entry["graph_ms" if graph else "plain_ms"] = round(statistics.median(times), 3)
                if graph:
                    entry["graph_captured"] = n not in backend.graph_failures
                    entry["graph_warning"] = [str(w.message)[:500] for w in caught] or None
        finally:
            backend.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the engines and sidecars here")
    args = parser.parse_args(argv)
    reason = skipped_reason()
    if reason is not None:
        print(json.dumps({"skipped": reason}))
        return 0
    import tensorrt

    start = time.perf_counter()
    report: dict = {"tensorrt": tensorrt.__version__, "engines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint, onnx = sources(folder)
        report["sources_seconds"] = round(time.perf_counter() - start, 1)
        cache = folder / "timing.cache"
        for variant in VARIANTS:
            for tf32 in (False, True):
                engine = folder / f"{variant}{'-tf32' if tf32 else ''}.engine"
                # an INT8 engine is checked against its Q/DQ ONNX whatever the reference (ssd_export.tensorrt.check)
                entry = build(onnx[variant], engine, None if variant == "int8" else checkpoint, tf32, cache)
                if entry["built"] and not tf32:
                    try:
                        entry["cuda_graph"] = graphs_and_latency(engine)
                    except Exception as exc:  # noqa: BLE001 - the report says what failed; the other variants go on
                        entry["cuda_graph"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                report["engines"][f"{variant} tf32={'on' if tf32 else 'off'}"] = entry
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
