"""CUDA through cuda-python (``cuda.bindings``): the device the TensorRT backend runs on, without torch.

What a Jetson without torch needs to run an engine: the device's facts (:func:`device_info`, also
what the engine sidecar is checked against) and :class:`CudaMemory`, the device-memory layer of the
TensorRT backend - device buffers, a stream, host <-> device copies, CUDA graph capture and replay.

``cuda.bindings`` is imported lazily, inside the functions that need it, so this module imports on
any machine. Every CUDA call's status is checked: a failure is a :class:`CudaError` naming the call
and the CUDA error; no package, no driver or no GPU is a :class:`CudaUnavailableError` that says so.

The backend talks to the device only through the methods of :class:`CudaMemory`; the unit tests give
it a host-memory stand-in with the same methods, so the backend's control flow runs on a CPU, while
this class itself is tested on a GPU (``tests/ssd_runtime/test_cuda_device.py``, marked ``gpu``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ssd_runtime.errors import ToolkitError

__all__ = ["CudaError", "CudaGraph", "CudaMemory", "CudaUnavailableError", "DeviceInfo", "DeviceMemory", "device_info",
           "set_device"]

INSTALL_HINT = (
    "pip install 'ssd300-toolkit[cuda]' (cuda-bindings; on JetPack 6, CUDA 12.6: pip install 'cuda-bindings>=12.6,<13')"
)
#: The cuda-bindings that pairs with a driver of each CUDA major (a driver runs the CUDA runtime of its
#: own major or older; cuda-bindings 13.x needs driver 580 or newer). JetPack 6 and the tensorrt-cu12
#: wheels are CUDA 12; the extras tensorrt-cu12 / tensorrt-cu13 install the matching pair.
BINDINGS_FOR_CUDA_MAJOR = {12: "cuda-bindings>=12.6,<13", 13: "cuda-bindings>=13,<14"}


class CudaUnavailableError(ToolkitError, RuntimeError):
    """No CUDA here: cuda-bindings is not installed, or there is no driver or no GPU."""


class CudaError(ToolkitError, RuntimeError):
    """A CUDA runtime call failed (the message names the call and the CUDA error)."""


@dataclass(frozen=True)
class DeviceInfo:
    """One CUDA device as the runtime and the engine sidecar describe it.

    compute_capability: "major.minor" ("9.0" for H100/H200, "8.7" for Jetson Orin).
    cuda_runtime_version, driver_version: "major.minor" (CUDA 12.6 -> "12.6").
    total_memory: bytes of device memory.
    """

    index: int
    name: str
    compute_capability: str
    cuda_runtime_version: str
    driver_version: str
    total_memory: int


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as exc:
        raise CudaUnavailableError(f"CUDA device memory needs cuda-python's cuda.bindings ({exc}): {INSTALL_HINT}") from exc
    return cudart


def _error_name(cudart: Any, err: Any) -> str:
    name = cudart.cudaGetErrorName(err)[1]
    return name.decode() if isinstance(name, bytes) else str(name)


def _error_text(cudart: Any, err: Any) -> str:
    text = cudart.cudaGetErrorString(err)[1]
    return text.decode() if isinstance(text, bytes) else str(text)


def _call(cudart: Any, what: str, result: tuple) -> Any:
    """Check a cuda.bindings result ``(status, *values)``; return the value (or a tuple of them)."""
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f"{what} failed: {_error_name(cudart, err)} ({_error_text(cudart, err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _version(number: int) -> str:
    """CUDA's version integer (1000 * major + 10 * minor, e.g. 12060) -> "12.6"."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def device_count() -> int:
    """Number of CUDA devices; :class:`CudaUnavailableError` (with the CUDA error name) when there are none."""
    cudart = _cudart()
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaUnavailableError(f"no usable CUDA GPU: cudaGetDeviceCount returned {_error_name(cudart, err)} "
                                   f"({_error_text(cudart, err)}); {_why_no_gpu(cudart, err)}")
    if count == 0:
        raise CudaUnavailableError("no CUDA GPU: cudaGetDeviceCount found 0 devices")
    return int(count)


def _why_no_gpu(cudart: Any, err: Any) -> str:
    """What a failed cudaGetDeviceCount means here and what to do: for cudaErrorInsufficientDriver, the
    driver's CUDA version (cudaDriverGetVersion: 0 when no driver is installed) against the CUDA version
    of the installed cuda-bindings (cudaRuntimeGetVersion), and the package that matches the driver."""
    if err != cudart.cudaError_t.cudaErrorInsufficientDriver:
        return "this machine has no NVIDIA GPU visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    driver_err, driver = cudart.cudaDriverGetVersion()
    runtime_err, runtime = cudart.cudaRuntimeGetVersion()
    if driver_err != cudart.cudaError_t.cudaSuccess or not driver:
        return "no NVIDIA driver is installed (cudaDriverGetVersion reports none): install the driver, or run on a GPU machine"
    bindings = _package_version("cuda-bindings")
    built_for = _version(runtime) if runtime_err == cudart.cudaError_t.cudaSuccess else "an unknown CUDA version"
    driver_major, runtime_major = driver // 1000, (runtime // 1000 if runtime_err == cudart.cudaError_t.cudaSuccess else None)
    if runtime_major is not None and driver_major < runtime_major:
        match = BINDINGS_FOR_CUDA_MAJOR.get(driver_major, f"cuda-bindings>={driver_major},<{driver_major + 1}")
        return (f"the NVIDIA driver supports CUDA {_version(driver)}, but cuda-bindings {bindings} is built for CUDA "
                f"{built_for}, a newer major; install the cuda-bindings of the driver's CUDA: pip install '{match}' "
                f"(with TensorRT: pip install 'ssd300-toolkit[tensorrt-cu{driver_major}]'), or upgrade the driver to "
                f"one for CUDA {runtime_major} (CUDA 13 needs driver 580 or newer)")
    return (f"the NVIDIA driver (CUDA {_version(driver)}) is older than cuda-bindings {bindings} (built for CUDA "
            f"{built_for}) needs: upgrade the driver, or pip install the cuda-bindings of CUDA {_version(driver)}")


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:  # JetPack-style installs without pip metadata
        return "(version unknown)"


def device_info(index: int = 0) -> DeviceInfo:
    """Facts about CUDA device ``index``; :class:`CudaUnavailableError` without cuda-bindings, driver or GPU."""
    count = device_count()
    if not 0 <= index < count:
        raise CudaUnavailableError(f"no CUDA device {index}: this machine has {count} (0..{count - 1})")
    cudart = _cudart()
    props = _call(cudart, f"cudaGetDeviceProperties({index})", cudart.cudaGetDeviceProperties(index))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return DeviceInfo(
        index=index,
        name=name.rstrip("\x00").strip(),
        compute_capability=f"{props.major}.{props.minor}",
        cuda_runtime_version=_version(_call(cudart, "cudaRuntimeGetVersion", cudart.cudaRuntimeGetVersion())),
        driver_version=_version(_call(cudart, "cudaDriverGetVersion", cudart.cudaDriverGetVersion())),
        total_memory=int(props.totalGlobalMem),
    )


def set_device(index: int) -> None:
    """Make CUDA device ``index`` current for the calling thread (cudaSetDevice; it retains the device's
    primary context, the one TensorRT and torch use). The TensorRT builder and runtime work on the
    device current when they are created, so this comes first (trtexec: sampleDevice.cpp, before building)."""
    cudart = _cudart()
    _call(cudart, f"cudaSetDevice({index})", cudart.cudaSetDevice(index))


class DeviceMemory(Protocol):
    """What the TensorRT backend needs from device memory: :class:`CudaMemory`, or a stand-in in tests.

    info: the device (:class:`DeviceInfo`); torch_device: where torch tensors handed in and out live.
    Pointers are ints; streams and graphs are whatever the implementation returns.
    """

    info: DeviceInfo
    torch_device: str

    def activate(self) -> None: ...
    def alloc(self, nbytes: int) -> int: ...
    def free(self, pointer: int) -> None: ...
    def create_stream(self) -> Any: ...
    def destroy_stream(self, stream: Any) -> None: ...
    def stream_handle(self, stream: Any) -> int: ...
    def to_device(self, pointer: int, array: np.ndarray, stream: Any) -> None: ...
    def to_host(self, array: np.ndarray, pointer: int, stream: Any) -> None: ...
    def device_to_device(self, destination: int, source: int, nbytes: int, stream: Any) -> None: ...
    def synchronize(self, stream: Any) -> None: ...
    def wait_for_torch(self) -> None: ...
    def capture(self, stream: Any, launch: Callable[[], None]) -> Any: ...
    def launch(self, graph: Any, stream: Any) -> None: ...
    def free_graph(self, graph: Any) -> None: ...


@dataclass
class CudaGraph:
    """A captured and instantiated CUDA graph (``graph`` and its executable ``graph_exec``)."""

    graph: Any
    graph_exec: Any


class CudaMemory:
    """The TensorRT backend's device-memory layer on CUDA device ``index`` (see the module docstring).

    Pointers are plain ints (what ``set_tensor_address`` takes); streams are opaque handles, and
    :meth:`stream_handle` gives the int TensorRT's ``execute_async_v3`` takes. The CUDA runtime keeps the
    current device per host thread, so :meth:`activate` is called by every thread before it works.

    torch_device: where torch tensors handed in and out live ("cuda:N").
    """

    def __init__(self, index: int = 0) -> None:
        self.info = device_info(index)  # CudaUnavailableError here, before anything is allocated
        self.index = index
        self.torch_device = f"cuda:{index}"
        self._cudart = _cudart()
        self.activate()

    def activate(self) -> None:
        """Make this device current for the calling thread (:func:`set_device`)."""
        set_device(self.index)

    def _call(self, what: str, result: tuple) -> Any:
        return _call(self._cudart, what, result)

    def alloc(self, nbytes: int) -> int:
        """Device allocation of ``nbytes`` (at least 1) -> its pointer."""
        return int(self._call(f"cudaMalloc({nbytes})", self._cudart.cudaMalloc(max(int(nbytes), 1))))

    def free(self, pointer: int) -> None:
        self._call("cudaFree", self._cudart.cudaFree(pointer))

    def create_stream(self) -> Any:
        """A non-blocking stream (it does not synchronize with the legacy default stream)."""
        return self._call("cudaStreamCreateWithFlags", self._cudart.cudaStreamCreateWithFlags(self._cudart.cudaStreamNonBlocking))

    def destroy_stream(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", self._cudart.cudaStreamDestroy(stream))

    @staticmethod
    def stream_handle(stream: Any) -> int:
        return int(stream)

    def to_device(self, pointer: int, array: np.ndarray, stream: Any) -> None:
        """Copy a C-contiguous host array to device memory at ``pointer`` (asynchronous on ``stream``)."""
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync (host to device)",
                   self._cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, kind, stream))

    def to_host(self, array: np.ndarray, pointer: int, stream: Any) -> None:
        """Copy device memory at ``pointer`` into a C-contiguous host array (complete after :meth:`synchronize`)."""
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync (device to host)",
                   self._cudart.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, kind, stream))

    def device_to_device(self, destination: int, source: int, nbytes: int, stream: Any) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._call("cudaMemcpyAsync (device to device)",
                   self._cudart.cudaMemcpyAsync(destination, source, nbytes, kind, stream))

    def synchronize(self, stream: Any) -> None:
        """Wait until all work queued on ``stream`` is done."""
        self._call("cudaStreamSynchronize", self._cudart.cudaStreamSynchronize(stream))

    def wait_for_torch(self) -> None:
        """Wait for torch's current stream on this device: a torch tensor handed in is then written."""
        import torch

        torch.cuda.current_stream(self.torch_device).synchronize()

    def capture(self, stream: Any, launch: Callable[[], None]) -> CudaGraph:
        """Capture what ``launch`` queues on ``stream`` into an instantiated graph (nothing runs meanwhile).

        Thread-local capture mode: other threads keep using CUDA normally. trtexec's sequence
        (``TrtCudaGraph`` in sampleDevice.h at release/10.3): begin capture, enqueue, end capture,
        instantiate. When ``launch`` raises (TensorRT's enqueue returns False under capture) or the capture
        is invalidated, the capture is ended, any graph it returned destroyed and the error cleared
        (trtexec's ``endCaptureOnError``), and the error raised: nothing is left allocated, the stream
        stays usable.
        """
        cudart = self._cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call("cudaStreamBeginCapture", cudart.cudaStreamBeginCapture(stream, mode))
        try:
            launch()
        except BaseException:
            self._end_failed_capture(stream)  # the launch's error is the one to report
            raise
        err, graph = cudart.cudaStreamEndCapture(stream)
        if err != cudart.cudaError_t.cudaSuccess:
            self._destroy_graph(graph)
            cudart.cudaGetLastError()
            raise CudaError(f"cudaStreamEndCapture failed: {_error_name(cudart, err)} ({_error_text(cudart, err)})")
        try:
            graph_exec = self._call("cudaGraphInstantiate", cudart.cudaGraphInstantiate(graph, 0))
        except CudaError:
            self._destroy_graph(graph)
            cudart.cudaGetLastError()
            raise
        return CudaGraph(graph, graph_exec)

    def _end_failed_capture(self, stream: Any) -> None:
        """End a capture whose enqueue failed: an invalidated capture returns no graph, a completed one a
        graph that must not be used; destroy it, and clear the error CUDA recorded."""
        _, graph = self._cudart.cudaStreamEndCapture(stream)
        self._destroy_graph(graph)
        self._cudart.cudaGetLastError()

    def _destroy_graph(self, graph: Any) -> None:
        if graph is not None and int(graph) != 0:
            self._cudart.cudaGraphDestroy(graph)

    def launch(self, graph: CudaGraph, stream: Any) -> None:
        """Replay a captured graph on ``stream`` (asynchronous)."""
        self._call("cudaGraphLaunch", self._cudart.cudaGraphLaunch(graph.graph_exec, stream))

    def free_graph(self, graph: CudaGraph) -> None:
        self._call("cudaGraphExecDestroy", self._cudart.cudaGraphExecDestroy(graph.graph_exec))
        self._call("cudaGraphDestroy", self._cudart.cudaGraphDestroy(graph.graph))
