"""ssd_runtime.cuda_device: the real no-GPU error path here (cuda-bindings installed, no driver) and,
marked gpu, the real device memory, copies, stream and CUDA graph on a GPU machine."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from ssd_runtime.cuda_device import (
    CudaError,
    CudaMemory,
    CudaUnavailableError,
    _version,
    device_count,
    device_info,
)
from tests.helpers.cuda_status import cuda_status


no_gpu_here = pytest.mark.skipif(
    cuda_status() is None, reason="a CUDA GPU (the gpu-marked tests below cover it) or no cuda-bindings here"
)


def test_version_numbers_read_as_major_minor():
    assert _version(12060) == "12.6"
    assert _version(13040) == "13.4"
    assert _version(11080) == "11.8"


@no_gpu_here
def test_device_info_without_a_gpu_names_the_cuda_error():
    status = cuda_status()
    with pytest.raises(CudaUnavailableError, match="no usable CUDA GPU") as info:
        device_info()
    assert status in str(info.value)  # e.g. cudaErrorInsufficientDriver on a machine without a driver
    assert "driver" in str(info.value)


@no_gpu_here
def test_cuda_memory_without_a_gpu_fails_before_allocating():
    with pytest.raises(CudaUnavailableError, match=cuda_status()):
        CudaMemory(0)


def test_missing_cuda_bindings_says_what_to_install(monkeypatch):
    # None in sys.modules makes the import raise ImportError, as on a machine without the package
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    with pytest.raises(CudaUnavailableError, match=r"pip install 'ssd300-toolkit\[cuda\]'") as info:
        device_info()
    assert "cuda-bindings" in str(info.value) and "JetPack 6" in str(info.value)


# ---- CudaMemory's own logic through a stand-in for cuda.bindings.runtime (tests/helpers/fakes/cudart.py) -----


@pytest.fixture
def cudart(monkeypatch):
    from tests.helpers.fakes.cudart import FakeCudart

    fake = FakeCudart()
    monkeypatch.setattr("ssd_runtime.cuda_device._cudart", lambda: fake)
    return fake


@pytest.mark.parametrize(("driver", "runtime", "wanted"), [
    (12080, 13050, r"driver supports CUDA 12\.8, but cuda-bindings .* is built for CUDA 13\.5.*"
                   r"pip install 'cuda-bindings>=12\.6,<13'.*ssd300-toolkit\[tensorrt-cu12\].*580"),
    (13000, 13050, r"driver \(CUDA 13\.0\) is older than cuda-bindings .* \(built for CUDA 13\.5\).*upgrade the driver"),
    (0, 13050, "no NVIDIA driver is installed"),
])
def test_a_driver_too_old_for_the_bindings_says_both_versions_and_what_to_install(cudart, driver, runtime, wanted):
    from tests.helpers.fakes.cudart import cudaError_t

    cudart.device_count_error = cudaError_t.cudaErrorInsufficientDriver
    cudart.driver_version, cudart.runtime_version = driver, runtime
    with pytest.raises(CudaUnavailableError, match=r"no usable CUDA GPU: .*cudaErrorInsufficientDriver.*" + wanted):
        device_info(0)


def test_set_device_makes_the_device_current(cudart):
    from ssd_runtime.cuda_device import set_device

    cudart.devices = 2
    set_device(1)
    assert cudart.current_device == 1
    with pytest.raises(CudaError, match=r"cudaSetDevice\(2\).*cudaErrorNoDevice"):
        set_device(2)


@pytest.mark.parametrize("failure", ["enqueue", "invalidated", "end", "instantiate"])
def test_a_failed_capture_leaves_no_graph_and_clears_the_error(cudart, failure):
    """trtexec's endCaptureOnError (sampleDevice.h, release/10.3): end the capture, destroy any graph it
    returned, clear the CUDA error; the caller falls back to plain enqueues."""
    from tests.helpers.fakes.cudart import cudaError_t

    memory = CudaMemory(0)

    def enqueue():
        if failure == "enqueue":
            raise RuntimeError("execute_async_v3 returned False under capture")

    if failure == "invalidated":
        cudart.end_capture_error = cudaError_t.cudaErrorStreamCaptureInvalidated
    elif failure == "end":
        cudart.end_capture_error = cudaError_t.cudaErrorMemoryAllocation
    elif failure == "instantiate":
        cudart.instantiate_error = cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises((CudaError, RuntimeError)):
        memory.capture(1, enqueue)
    assert cudart.graphs == set() and cudart.last_error_cleared == 1


def test_a_captured_graph_is_freed_with_its_executable(cudart):
    memory = CudaMemory(0)
    graph = memory.capture(1, lambda: None)
    assert len(cudart.graphs) == 1
    memory.free_graph(graph)
    assert cudart.graphs == set()


# ---- real CUDA (run by scripts/gpu_check.sh) -------------------------------------------------------


@pytest.mark.gpu
def test_device_info_matches_torch():
    import torch

    info = device_info(0)
    major, minor = torch.cuda.get_device_capability(0)
    assert info.compute_capability == f"{major}.{minor}"
    assert info.name == torch.cuda.get_device_name(0)
    assert info.total_memory == torch.cuda.get_device_properties(0).total_memory
    assert info.cuda_runtime_version.count(".") == 1 and info.driver_version.count(".") == 1
    with pytest.raises(CudaUnavailableError, match="no CUDA device"):
        device_info(device_count())


@pytest.mark.gpu
def test_copies_round_trip_through_device_memory():
    memory = CudaMemory(0)
    stream = memory.create_stream()
    host = np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32)
    a, b = memory.alloc(host.nbytes), memory.alloc(host.nbytes)
    try:
        memory.to_device(a, host, stream)
        memory.device_to_device(b, a, host.nbytes, stream)
        back = np.empty_like(host)
        memory.to_host(back, b, stream)
        memory.synchronize(stream)
        np.testing.assert_array_equal(back, host)
    finally:
        memory.free(a)
        memory.free(b)
        memory.destroy_stream(stream)


@pytest.mark.gpu
def test_graph_replays_the_captured_work_on_new_data():
    memory = CudaMemory(0)
    stream = memory.create_stream()
    n = 4096
    src, dst = memory.alloc(n * 4), memory.alloc(n * 4)
    graph = memory.capture(stream, lambda: memory.device_to_device(dst, src, n * 4, stream))
    try:
        for value in (1.0, 2.5):  # the graph copies whatever src holds at replay time
            memory.to_device(src, np.full(n, value, np.float32), stream)
            memory.launch(graph, stream)
            out = np.zeros(n, np.float32)
            memory.to_host(out, dst, stream)
            memory.synchronize(stream)
            assert (out == value).all()
    finally:
        memory.free_graph(graph)
        memory.free(src)
        memory.free(dst)
        memory.destroy_stream(stream)


@pytest.mark.gpu
def test_failed_cuda_call_names_the_call_and_error():
    memory = CudaMemory(0)
    with pytest.raises(CudaError, match=r"cudaMalloc\(.*cudaErrorMemoryAllocation"):
        memory.alloc(1 << 60)  # 1 EiB: more than any GPU has


@pytest.mark.gpu
def test_torch_tensors_copy_in_and_out_without_the_host():
    import torch

    memory = CudaMemory(0)
    stream = memory.create_stream()
    source = torch.arange(1000, dtype=torch.float32, device="cuda:0") * 2
    target = torch.empty_like(source)
    buffer = memory.alloc(source.numel() * 4)
    try:
        memory.wait_for_torch()  # source was written on torch's stream
        memory.device_to_device(buffer, source.data_ptr(), source.numel() * 4, stream)
        memory.device_to_device(target.data_ptr(), buffer, source.numel() * 4, stream)
        memory.synchronize(stream)
        assert torch.equal(target, source)
    finally:
        memory.free(buffer)
        memory.destroy_stream(stream)
