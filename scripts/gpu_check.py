"""All GPU checks in one call: GPU-marked tests, the TensorRT checks, then every GPU benchmark; one JSON report.

The TensorRT checks (scripts/gpu_check_tensorrt.py, under 300 s: every variant built and checked with
TF32 off and on, CUDA graph capture per variant, the end2end engine timed) report
``{"skipped": "skipped: no tensorrt module ..."}`` where TensorRT is not installed.

Run by scripts/gpu_check.sh on a machine with a CUDA GPU (no internet needed). Each benchmark is a
module under benchmarks/ whose main() prints one JSON line; baselines are measured inside each.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: GPU benchmarks: (module, extra args, time limit in seconds). Later features add one line each.
BENCHMARKS = [
    ("benchmarks.train_step_gpu", ["--iters", "15", "--loader-iterations", "40"], 200),
    ("benchmarks.postprocess_gpu", ["--batch", "1"], 60),
    ("benchmarks.postprocess_gpu", ["--batch", "32", "--repeats", "30"], 90),
    ("benchmarks.runtime_gpu", [], 150),
    # the stream pipeline against one frame at a time on a 120-frame H.264 clip, the full-width network in
    # FP16 on the GPU (random weights): 12 runs of 120 frames plus a live run; not run on a GPU yet, so the
    # 40 s it should take is an estimate (~20 ms a frame one at a time: decode, preprocess and the encoder
    # on the CPU); prints {"skipped": ...} without PyAV or CUDA
    ("benchmarks.stream", ["--device", "cuda", "--frames", "120", "--repeats", "2", "--batch-sizes", "1", "4"], 120),
]


def run_tests(out_dir: Path) -> dict:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu or tensorrt", "-p", "no:cacheprovider",
           f"--junitxml={out_dir / 'gpu_tests.xml'}", "tests"]
    # 600 s: the tensorrt-marked tests build small engines (each build is TensorRT's tactic search)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", summary)}
    failures = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"returncode": proc.returncode, "summary": summary, "counts": counts, "failures": failures[:20],
            "seconds": round(time.perf_counter() - start, 1)}


def run_tensorrt(limit: int = 300) -> dict:
    """scripts/gpu_check_tensorrt.py in its own process: its JSON, or what stopped it."""
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "scripts/gpu_check_tensorrt.py"], cwd=ROOT, capture_output=True,
                              text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {limit} s"}
    result = _last_json(proc.stdout)
    if proc.returncode != 0 or result is None:
        return {"error": proc.stderr.strip()[-2000:] or f"exit {proc.returncode}, no JSON"}
    result.setdefault("seconds", round(time.perf_counter() - start, 1))
    return result


def packages() -> dict:
    """Versions of what the gpu and tensorrt tests need (None: not installed, so those tests are skipped or fail)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("cuda-bindings", "tensorrt", "onnxruntime"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    try:  # JetPack and NVIDIA's containers install TensorRT's Python module without pip metadata
        import tensorrt

        found["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    return found


def run_benchmark(module: str, args: list[str], limit: int) -> dict:
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"module": module, "error": f"timed out after {limit} s"}
    result = _last_json(proc.stdout)
    if proc.returncode != 0 or result is None:
        return {"module": module, "error": proc.stderr.strip()[-2000:] or f"exit {proc.returncode}, no JSON",
                "stdout": proc.stdout[-2000:]}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _last_json(text: str) -> dict | None:
    """The last JSON object printed: the whole output, else the last line that parses."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def main() -> int:
    out_dir = Path(os.environ.get("OUT") or ROOT / "runs" / "gpu_check")
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {"python": sys.version.split()[0]}
    try:
        import torch

        report.update(torch=torch.__version__, cuda=torch.version.cuda,
                      device=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    except ImportError:
        report["torch"] = None
    report.update(packages())
    report["tests"] = run_tests(out_dir)
    report["tensorrt_checks"] = run_tensorrt()
    only = sys.argv[1:]  # optional: run only the benchmarks whose module name contains one of these
    report["benchmarks"] = [run_benchmark(m, a, t) for m, a, t in BENCHMARKS if not only or any(o in m for o in only)]
    text = json.dumps(report, indent=1)
    (out_dir / "gpu_check.json").write_text(text)
    print(text)
    return 0 if report["tests"]["returncode"] in (0, 5) else 1


if __name__ == "__main__":
    raise SystemExit(main())
