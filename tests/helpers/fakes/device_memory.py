"""A HOST-MEMORY STAND-IN for ``ssd_runtime.cuda_device.CudaMemory``, used only in unit tests.

Not CUDA: "device" buffers are NumPy byte arrays in host memory, copies are ``ctypes.memmove``,
streams are numbers, and a "CUDA graph" keeps the captured launch function and calls it on replay
(like a real capture, nothing runs while capturing). Together with the fake ``tensorrt`` module
(tests/helpers/fakes/tensorrt.py), whose execution context reads and writes host pointers, it lets the
TensorRT backend's own control flow run on a CPU: sidecar checks, tensor discovery, shapes per batch,
buffer reuse, a context and a stream per thread, graph capture and replay, outputs, errors.

It counts what the backend asked for (allocations, frees, streams, captures, launches) and checks
every pointer it is given lies inside a live allocation, so a wrong size or a use after free fails
the test instead of corrupting memory. The real class is tested on a GPU
(tests/ssd_runtime/test_cuda_device.py, marked gpu).
"""
from __future__ import annotations

import ctypes
import itertools
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ssd_runtime.cuda_device import CudaError, DeviceInfo


#: The stand-in's "current device", per host thread as CUDA keeps it (cudaSetDevice).
_current = threading.local()


def set_device(index: int) -> None:
    """Stand-in for ``ssd_runtime.cuda_device.set_device``: make device ``index`` current for this thread."""
    _current.device = int(index)


def current_device() -> int | None:
    """The device this thread made current (None: none yet); the fake TensorRT builder reads it."""
    return getattr(_current, "device", None)


@dataclass
class HostGraph:
    """The stand-in's "CUDA graph": the captured launch, called again on every replay."""

    launch: Callable[[], None]
    freed: bool = False


class HostMemory:
    """Same methods as ``CudaMemory`` (the ``DeviceMemory`` protocol) over host memory; see the module docstring.

    compute_capability: what the stand-in "GPU" reports (sidecars are checked against it).
    counts: "alloc", "free", "stream", "destroy_stream", "capture", "capture_failed", "launch", "free_graph",
    "to_device", "to_host", "device_to_device", "synchronize" (thread safe).
    fail_captures: how many of the next captures fail, as an invalidated capture does (CudaError; no graph
        is left, like ``CudaMemory.capture`` after it ended the capture).
    """

    def __init__(self, compute_capability: str = "8.7", index: int = 0) -> None:
        self.info = DeviceInfo(index, "host-memory stand-in (tests/helpers/fakes/device_memory.py)", compute_capability,
                               "12.6", "12.6", 0)
        self.torch_device = "cpu"  # torch tensors handed in and out are CPU tensors here
        self.counts: Counter[str] = Counter()
        self._buffers: dict[int, np.ndarray] = {}
        self._streams = itertools.count(1)
        self._lock = threading.Lock()
        self.fail_captures = 0
        self.live_graphs = 0

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    @property
    def live(self) -> int:
        """Allocations not freed yet."""
        return len(self._buffers)

    def _check(self, pointer: int, nbytes: int) -> None:
        for start, buffer in list(self._buffers.items()):
            if start <= pointer and pointer + nbytes <= start + buffer.nbytes:
                return
        raise AssertionError(f"{nbytes} bytes at {pointer:#x} are not inside a live allocation")

    def activate(self) -> None:
        set_device(self.info.index)
        self._count("activate")

    def alloc(self, nbytes: int) -> int:
        buffer = np.zeros(max(int(nbytes), 1), np.uint8)
        with self._lock:
            self._buffers[buffer.ctypes.data] = buffer
            self.counts["alloc"] += 1
        return buffer.ctypes.data

    def free(self, pointer: int) -> None:
        with self._lock:
            if self._buffers.pop(pointer, None) is None:
                raise AssertionError(f"free of {pointer:#x}, which is not a live allocation")
            self.counts["free"] += 1

    def create_stream(self) -> int:
        self._count("stream")
        return next(self._streams)

    def destroy_stream(self, stream: int) -> None:
        self._count("destroy_stream")

    @staticmethod
    def stream_handle(stream: int) -> int:
        return int(stream)

    def to_device(self, pointer: int, array: np.ndarray, stream: int) -> None:
        assert array.flags.c_contiguous
        self._check(pointer, array.nbytes)
        ctypes.memmove(pointer, array.ctypes.data, array.nbytes)
        self._count("to_device")

    def to_host(self, array: np.ndarray, pointer: int, stream: int) -> None:
        assert array.flags.c_contiguous
        self._check(pointer, array.nbytes)
        ctypes.memmove(array.ctypes.data, pointer, array.nbytes)
        self._count("to_host")

    def device_to_device(self, destination: int, source: int, nbytes: int, stream: int) -> None:
        # one side is a torch tensor's memory, the other one of ours
        mine = [p for p in (destination, source) if any(s <= p < s + b.nbytes for s, b in list(self._buffers.items()))]
        assert mine, "device_to_device between two pointers that are not ours"
        for pointer in mine:
            self._check(pointer, nbytes)
        ctypes.memmove(destination, source, nbytes)
        self._count("device_to_device")

    def synchronize(self, stream: int) -> None:
        self._count("synchronize")

    def wait_for_torch(self) -> None:
        self._count("wait_for_torch")

    def capture(self, stream: int, launch: Callable[[], None]) -> HostGraph:
        self._count("capture")
        with self._lock:
            fail, self.fail_captures = self.fail_captures > 0, max(self.fail_captures - 1, 0)
        if fail:
            self._count("capture_failed")
            raise CudaError("cudaStreamEndCapture failed: cudaErrorStreamCaptureInvalidated (operation failed due to "
                            "a previous error during capture)")
        with self._lock:
            self.live_graphs += 1
        return HostGraph(launch)

    def launch(self, graph: HostGraph, stream: int) -> None:
        assert not graph.freed, "launch of a freed graph"
        graph.launch()
        self._count("launch")

    def free_graph(self, graph: HostGraph) -> None:
        assert not graph.freed, "graph freed twice"
        graph.freed = True
        with self._lock:
            self.live_graphs -= 1
        self._count("free_graph")
