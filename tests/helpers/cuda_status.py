"""What CUDA says on this machine, for tests that take the real no-GPU error path where there is no GPU."""
from __future__ import annotations


def cuda_status() -> str | None:
    """The CUDA error name cudaGetDeviceCount returns here; None when a GPU is usable (or no cuda-bindings)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:  # the missing-package error is tested on its own (tests/ssd_runtime/test_cuda_device.py)
        return None
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        return cudart.cudaGetErrorName(err)[1].decode()
    return None if count else "no devices"
