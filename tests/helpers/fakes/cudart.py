"""A STAND-IN for ``cuda.bindings.runtime`` (cuda-python's CUDA runtime bindings), used only in unit tests.

Not CUDA: it answers the few calls ``ssd_runtime.cuda_device`` makes the way cuda-bindings does (every
call returns ``(cudaError_t, *values)``), with knobs for what a machine would answer - the driver's
CUDA version, the bindings' CUDA version, what cudaGetDeviceCount returns, whether a capture's enqueue
or its end fails - and records the graphs it created and destroyed, so a test sees what leaked. The
real module is tested on a GPU (tests/ssd_runtime/test_cuda_device.py, marked gpu).
"""
from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from types import SimpleNamespace


class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-bindings' name; values from driver_types.h
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorStreamCaptureInvalidated = 901


_TEXT = {
    cudaError_t.cudaSuccess: "no error",
    cudaError_t.cudaErrorMemoryAllocation: "out of memory",
    cudaError_t.cudaErrorInsufficientDriver: "CUDA driver version is insufficient for CUDA runtime version",
    cudaError_t.cudaErrorNoDevice: "no CUDA-capable device is detected",
    cudaError_t.cudaErrorStreamCaptureInvalidated: "operation failed due to a previous error during capture",
}


class Handle(int):
    """A CUDA handle (cudaGraph_t, ...): ``int(handle)`` is its address, 0 the null handle."""


@dataclass
class FakeCudart:
    """The stand-in module: attribute names as in ``cuda.bindings.runtime``; knobs and records below.

    driver_version / runtime_version: CUDA's integers (12060 = 12.6); driver 0 means no driver installed.
    device_count_error: what cudaGetDeviceCount returns (None: success with ``devices``).
    end_capture_error: what cudaStreamEndCapture returns (None: success); invalidated captures return a
        null graph, others a graph that must not be used.
    instantiate_error: what cudaGraphInstantiate returns (None: success).
    graphs: graphs created and not destroyed; last_error_cleared: cudaGetLastError calls.
    """

    driver_version: int = 12060
    runtime_version: int = 12060
    devices: int = 1
    device_count_error: cudaError_t | None = None
    end_capture_error: cudaError_t | None = None
    instantiate_error: cudaError_t | None = None
    graphs: set[int] = field(default_factory=set)
    last_error_cleared: int = 0
    current_device: int | None = None

    cudaError_t = cudaError_t  # noqa: N815

    def __post_init__(self) -> None:
        self._handles = itertools.count(0x1000)
        self.cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)  # noqa: N815

    def cudaGetErrorName(self, err):  # noqa: N802
        return cudaError_t.cudaSuccess, cudaError_t(err).name.encode()

    def cudaGetErrorString(self, err):  # noqa: N802
        return cudaError_t.cudaSuccess, _TEXT[cudaError_t(err)].encode()

    def cudaGetDeviceCount(self):  # noqa: N802
        if self.device_count_error is not None:
            return self.device_count_error, None
        return cudaError_t.cudaSuccess, self.devices

    def cudaGetDeviceProperties(self, index):  # noqa: N802
        props = SimpleNamespace(name=b"stand-in GPU (tests/helpers/fakes/cudart.py)", major=9, minor=0, totalGlobalMem=80 << 30)
        return cudaError_t.cudaSuccess, props

    def cudaDriverGetVersion(self):  # noqa: N802 - succeeds without a driver, reporting 0
        return cudaError_t.cudaSuccess, self.driver_version

    def cudaRuntimeGetVersion(self):  # noqa: N802
        return cudaError_t.cudaSuccess, self.runtime_version

    def cudaSetDevice(self, index):  # noqa: N802
        if not 0 <= index < self.devices:
            return (cudaError_t.cudaErrorNoDevice,)
        self.current_device = index
        return (cudaError_t.cudaSuccess,)

    def cudaGetLastError(self):  # noqa: N802
        self.last_error_cleared += 1
        return (cudaError_t.cudaSuccess,)

    def cudaStreamBeginCapture(self, stream, mode):  # noqa: N802
        return (cudaError_t.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):  # noqa: N802
        if self.end_capture_error == cudaError_t.cudaErrorStreamCaptureInvalidated:
            return self.end_capture_error, Handle(0)
        graph = Handle(next(self._handles))
        self.graphs.add(int(graph))
        return self.end_capture_error or cudaError_t.cudaSuccess, graph

    def cudaGraphInstantiate(self, graph, flags):  # noqa: N802
        if self.instantiate_error is not None:
            return self.instantiate_error, None
        return cudaError_t.cudaSuccess, Handle(next(self._handles))

    def cudaGraphDestroy(self, graph):  # noqa: N802
        self.graphs.discard(int(graph))
        return (cudaError_t.cudaSuccess,)

    def cudaGraphExecDestroy(self, graph_exec):  # noqa: N802
        return (cudaError_t.cudaSuccess,)
