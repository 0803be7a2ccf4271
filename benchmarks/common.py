"""What several benchmarks share: single-threaded pools, facts about the CPU and the machine's load, the
JSON report on stdout (and in a file), and whether a torch benchmark can run on the device asked for.

No third-party import at the top: :func:`single_threaded` must run before NumPy is imported.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

#: lscpu flags that decide which INT8 / FP32 kernels ONNX Runtime (MLAS) can use.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_tile", "amx_int8", "amx_bf16")


def single_threaded() -> None:
    """One thread in the BLAS and OpenMP pools; call before NumPy (or torch) is imported, which reads these."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_facts() -> dict:
    """CPU model name, core count and SIMD flags (from lscpu / /proc/cpuinfo), hypervisor."""
    facts: dict = {"cores": os.cpu_count(), "affinity_cores": len(os.sched_getaffinity(0))}
    fields: dict[str, str] = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}
    except (OSError, subprocess.CalledProcessError):
        pass
    facts["model_name"] = fields.get("Model name") or platform.processor() or platform.machine()
    facts["vendor"] = fields.get("Vendor ID")
    facts["family_model_stepping"] = "/".join(fields.get(k, "?") for k in ("CPU family", "Model", "Stepping"))
    facts["hypervisor"] = fields.get("Hypervisor vendor")
    flags = set(fields.get("Flags", "").split())
    facts["simd_flags"] = [f for f in SIMD_FLAGS if f in flags]
    facts["simd_flags_absent"] = [f for f in SIMD_FLAGS if f not in flags]
    return facts


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (/proc/loadavg); empty where there is none."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def print_report(report: dict, out: str | None) -> None:
    """The report as indented JSON on stdout and, with ``out``, in that file too."""
    text = json.dumps(report, indent=1)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def torch_skip_reason(device: str) -> str | None:
    """Why a torch benchmark cannot run on ``device`` here (no torch; a CUDA device without CUDA), or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "CUDA is not available"
    return None
