"""TensorRT backend for engines built by ``ssd-export engine`` (``.engine`` / ``.plan``), TensorRT 10 and 11.

Loading, in this order (a plan is executable code, so nothing is deserialized before it is checked):

1. the sidecar ``X.engine.json`` (:func:`ssd_runtime.engine_sidecar.read_sidecar`) gives the model
   spec; a plan without one is refused unless the caller passes ``trust_plan=True`` and ``spec=``;
2. ``tensorrt`` is imported and the GPU is opened (:class:`~ssd_runtime.cuda_device.CudaMemory`);
3. :func:`~ssd_runtime.engine_sidecar.check_sidecar`: the plan's sha256, the running TensorRT version
   and the GPU's compute capability against what the plan was built with (the error names the
   ``ssd-export engine`` command that rebuilds it);
4. ``trt.Runtime(logger).deserialize_cuda_engine(plan)``; the I/O tensors are found by name
   (``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``): one input, and either
   ``locs, class_logits`` (``output_kind = "raw"``) or ``boxes, scores, labels, num_detections``
   (``output_kind = "detections"``: an end2end engine, decode and NMS inside, baked settings from the
   sidecar).

Running: every thread gets its own execution context and one CUDA stream, created on its first
call; per batch size it allocates device buffers once and reuses them (``set_input_shape`` and
``set_tensor_address`` when the batch size changes), and, with ``cuda_graph=True``, captures
``execute_async_v3`` into a CUDA graph it replays, in trtexec's sequence (``sampleInference.cpp``
at release/10.3, ``createEnqueueFunction``): enqueue once, synchronize, begin capture, enqueue, end
capture, instantiate. A batch size whose capture fails (work TensorRT cannot capture) runs with plain
``execute_async_v3`` from then on, after one ``CudaGraphFallbackWarning``. NumPy in -> NumPy out (one host copy each way;
no torch needed, so a Jetson without torch runs engines); a torch tensor in -> torch tensors out on
the GPU (device-to-device copies only). The Detector hands in a device tensor when its postprocess is
"torch" (:meth:`ssd_runtime.detector.Detector.infer`).

Device memory goes through a small interface (:class:`~ssd_runtime.cuda_device.DeviceMemory`); the
unit tests pass a host-memory stand-in and a fake ``tensorrt`` module to run this control flow on a
CPU. The real TensorRT tests are marked ``tensorrt`` (``scripts/gpu_check.sh``).
"""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssd_runtime.cuda_device import CudaError, DeviceMemory
from ssd_runtime.engine_sidecar import (
    EngineSidecar,
    EngineSidecarError,
    check_sidecar,
    read_sidecar,
    sidecar_path,
)
from ssd_runtime.errors import ToolkitError
from ssd_runtime.preprocess import InputError
from ssd_runtime.spec import ModelSpec
from ssd_runtime.variants import DETECTION_OUTPUTS, RAW_OUTPUTS, VARIANT_TABLE

__all__ = ["CudaGraphFallbackWarning", "EngineLoadError", "EngineRunError", "TensorRTBackend"]

INSTALL_HINT = ("pip install 'ssd300-toolkit[tensorrt-cu13]' on a CUDA 13 driver (580+), 'ssd300-toolkit[tensorrt-cu12]' "
                "on a CUDA 12 one (TensorRT 10/11 with the cuda-bindings of the same CUDA major; nvidia-smi shows the "
                "driver's CUDA version); on Jetson TensorRT comes with JetPack (apt install python3-libnvinfer)")


class EngineLoadError(ValueError):
    """A plan cannot be loaded: no TensorRT, an unreadable plan, or tensors that are not an SSD300 engine's."""


class EngineRunError(ToolkitError, RuntimeError):
    """TensorRT failed to run an engine (``execute_async_v3`` returned False)."""


class CudaGraphFallbackWarning(RuntimeWarning):
    """Capturing a CUDA graph failed for one batch size; that batch size runs without graphs."""


@dataclass
class _Buffers:
    """Device buffers of one batch size: pointer and shape per tensor; the CUDA graph that uses them."""

    pointers: dict[str, int]
    shapes: dict[str, tuple[int, ...]]
    graph: Any = None


@dataclass
class _ThreadState:
    """One thread's execution context and stream, and its buffers per batch size."""

    context: Any
    stream: Any
    buffers: dict[int, _Buffers] = field(default_factory=dict)
    batch: int | None = None  # the batch size whose shapes and addresses the context holds


class TensorRTBackend:
    """A TensorRT engine (see the module docstring).

    Attributes: the :class:`~ssd_runtime.backends.Backend` members - spec, path, input_kind, output_kind,
    end2end (the baked :class:`~ssd_runtime.onnx_model.End2EndConfig` of an end2end engine), variant and
    precision (the sidecar's; None for a trusted plan without one), device ("cuda:N"), options - and
    sidecar (None for a trusted plan), cuda_graph, batch_range ((min, max) batch sizes of the
    optimisation profile), tensorrt_version.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = "cuda",
        cuda_graph: bool = False,
        trust_plan: bool = False,
        spec: ModelSpec | None = None,
        memory: DeviceMemory | None = None,
    ) -> None:
        """memory: the device-memory layer (default :class:`~ssd_runtime.cuda_device.CudaMemory` of ``device``).
        trust_plan, spec: load a plan that has no sidecar (executable code you trust) with this spec."""
        self.path = Path(path)
        index = _device_index(device)
        plan = self.path.read_bytes()
        self.sidecar = self._read_sidecar(trust_plan, spec)
        self.spec = self.sidecar.model_spec() if self.sidecar is not None else spec
        if self.sidecar is not None and spec is not None and spec != self.spec:
            raise EngineSidecarError(f"{self.path}: spec= differs from the spec in its sidecar; leave spec= out")
        self.end2end = self.sidecar.end2end_config() if self.sidecar is not None else None
        self.variant = self.sidecar.variant if self.sidecar is not None else None
        self.precision = self.sidecar.precision if self.sidecar is not None else None
        self.cuda_graph = bool(cuda_graph)
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise EngineLoadError(f"running {self.path} needs TensorRT ({exc}): {INSTALL_HINT}") from exc
        self._trt = trt
        self.tensorrt_version = trt.__version__
        if memory is None:
            from ssd_runtime import cuda_device

            memory = cuda_device.CudaMemory(index)  # CudaUnavailableError without cuda-bindings, driver or GPU
        self._memory = memory
        self.device = memory.torch_device  # "cuda:N" (the host-memory stand-in of the unit tests: "cpu")
        if self.sidecar is not None:
            check_sidecar(self.sidecar, plan, tensorrt_version=trt.__version__,
                          compute_capability=memory.info.compute_capability, engine_path=self.path)
        memory.activate()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.sidecar is not None and self.sidecar.version_compatible:
            # a version-compatible plan carries TensorRT's lean runtime (host code): allowed only for a
            # plan whose sha256 its sidecar has just vouched for
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineLoadError(
                f"TensorRT {trt.__version__} could not deserialize {self.path} (plan sha256 "
                f"{hashlib.sha256(plan).hexdigest()[:12]}...; TensorRT's messages above say why)"
                + (f"; rebuild it with: {self.sidecar.rebuild_command}" if self.sidecar is not None else "")
            )
        self._discover_tensors()
        self._states: dict[threading.Thread, _ThreadState] = {}
        self._lock = threading.Lock()
        #: batch size -> why its CUDA graph capture failed (those batch sizes run without graphs)
        self.graph_failures: dict[int, str] = {}
        self._closed = False
        self._finalizer = weakref.finalize(self, _release, memory, self._states)
        self._finalizer.atexit = False  # at interpreter exit the CUDA context goes away by itself

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cuda", **options: Any) -> TensorRTBackend:
        return cls(path, device=device, **options)

    def _read_sidecar(self, trust_plan: bool, spec: ModelSpec | None) -> EngineSidecar | None:
        if sidecar_path(self.path).exists() or not trust_plan:
            return read_sidecar(self.path)  # the missing-sidecar error says how to rebuild or trust
        if spec is None:
            raise EngineSidecarError(f"{self.path}: trust_plan=True needs spec= (the model spec; a plan has none)")
        return None

    def _discover_tensors(self) -> None:
        """Find the I/O tensors by name; set input/output names, dtypes, input_kind, output_kind, batch_range."""
        trt, engine = self._trt, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        kinds = {frozenset(v.output_names): (v.output_kind, v.output_names) for v in VARIANT_TABLE.values()}
        if len(inputs) != 1 or frozenset(outputs) not in kinds:
            raise EngineLoadError(
                f"{self.path}: not an SSD300 engine: inputs {inputs}, outputs {list(outputs)} (expected one input "
                f"and outputs {list(RAW_OUTPUTS)} or {list(DETECTION_OUTPUTS)})"
            )
        self.input_name = inputs[0]
        self.output_kind, self.output_names = kinds[frozenset(outputs)]
        if self.sidecar is not None and self.sidecar.output_kind != self.output_kind:
            raise EngineLoadError(f"{self.path}: the sidecar says output_kind {self.sidecar.output_kind!r}, "
                                  f"the plan's outputs {list(outputs)} are {self.output_kind!r}")
        if self.output_kind == "detections" and self.end2end is None:
            raise EngineLoadError(f"{self.path}: an end-to-end plan without a sidecar: its baked postprocess "
                                  "settings are unknown; build it with `ssd-export engine` (which writes them)")
        shape = self._input_shape = tuple(int(d) for d in engine.get_tensor_shape(self.input_name))
        size = self.spec.input_size
        if self.dtypes[self.input_name] == np.uint8 and shape[1:] == (size, size, 3):
            self.input_kind = "uint8-nhwc"
        elif shape[1:] == (3, size, size) and self.dtypes[self.input_name] in (np.float32, np.float16):
            self.input_kind = "float32-nchw"
        else:
            raise EngineLoadError(f"{self.path}: input {self.input_name!r} is {self.dtypes[self.input_name]} {shape}; "
                                  f"expected float32 (N, 3, {size}, {size}) or uint8 (N, {size}, {size}, 3)")
        if shape[0] == -1:  # dynamic batch: the one optimisation profile's range
            low, _, high = engine.get_tensor_profile_shape(self.input_name, 0)
            self.batch_range = (int(low[0]), int(high[0]))
        else:
            self.batch_range = (int(shape[0]), int(shape[0]))

    # ---- running --------------------------------------------------------------------------------

    def infer(self, batch: Any) -> tuple[Any, ...]:
        """A batch -> the engine's outputs: NumPy for a NumPy batch, torch tensors on the GPU for a torch one.

        float32-nchw engines take float32 (N, 3, S, S), uint8-nhwc ones uint8 (N, S, S, 3); N within
        :attr:`batch_range`. Raw: (locs (N, P, 4), class_logits (N, P, C)) float32; detections: (boxes
        (N, K, 4) float32, scores (N, K) float32, labels (N, K) int64, num_detections (N,) int64).
        """
        if self._closed:
            raise EngineRunError(f"{self.path}: this backend was closed")
        is_torch = not isinstance(batch, np.ndarray)
        self._check_batch(tuple(batch.shape), batch.dtype if not is_torch else _numpy_dtype_of(batch))
        memory = self._memory
        memory.activate()  # the CUDA runtime's current device is per thread
        state = self._state()
        n = int(batch.shape[0])
        buffers = self._buffers(state, n)
        pointer, nbytes = buffers.pointers[self.input_name], _nbytes(buffers.shapes[self.input_name], self.dtypes[self.input_name])
        if is_torch:
            batch = self._torch_input(batch)
            memory.wait_for_torch()  # the tensor was written on torch's stream
            memory.device_to_device(pointer, batch.data_ptr(), nbytes, state.stream)
        else:
            memory.to_device(pointer, np.ascontiguousarray(batch, dtype=self.dtypes[self.input_name]), state.stream)
        self._run(state, buffers)
        outputs = self._torch_outputs(state, buffers) if is_torch else self._numpy_outputs(state, buffers)
        memory.synchronize(state.stream)  # outputs complete; the input may be reused by the caller
        return tuple(_final_dtype(name, out) for name, out in zip(self.output_names, outputs))

    def _check_batch(self, shape: tuple[int, ...], dtype: Any) -> None:
        size = self.spec.input_size
        nhwc = self.input_kind == "uint8-nhwc"
        expected_dtype = np.dtype(np.uint8 if nhwc else np.float32)
        per_image = (size, size, 3) if nhwc else (3, size, size)
        if len(shape) != 4 or shape[1:] != per_image or np.dtype(dtype) != expected_dtype:
            raise InputError(f"{self.path} ({self.input_kind}) expects {expected_dtype.name} (N, "
                             f"{', '.join(map(str, per_image))}); received {np.dtype(dtype).name} {shape}")
        low, high = self.batch_range
        if not low <= shape[0] <= high:
            allowed = f"exactly {low} images (a static batch)" if low == high else f"{low} to {high} images (its profile)"
            raise InputError(f"{self.path} takes batches of {allowed}; received {shape[0]}: split the batch, or "
                             "rebuild it with another ssd-export engine --batch-profile min,opt,max")

    def _state(self) -> _ThreadState:
        thread = threading.current_thread()
        state = self._states.get(thread)
        if state is None:
            with self._lock:
                for other in [t for t in self._states if not t.is_alive()]:  # threads that ended
                    _release_state(self._memory, self._states.pop(other))
                context = self._engine.create_execution_context()
                if context is None:
                    raise EngineRunError(f"{self.path}: TensorRT could not create an execution context (device memory?)")
                state = self._states[thread] = _ThreadState(context, self._memory.create_stream())
        return state

    def _buffers(self, state: _ThreadState, n: int) -> _Buffers:
        """The device buffers for batch size ``n`` (allocated on first use), bound to the context."""
        context = state.context
        if state.batch != n:
            shape = (n, *self._input_shape[1:])
            if not context.set_input_shape(self.input_name, shape):
                raise EngineRunError(f"{self.path}: TensorRT refused the input shape {shape}")
        buffers = state.buffers.get(n)
        if buffers is None:
            shapes = {name: tuple(int(d) for d in context.get_tensor_shape(name)) for name in (self.input_name, *self.output_names)}
            pointers: dict[str, int] = {}
            try:
                for name, shape in shapes.items():
                    pointers[name] = self._memory.alloc(_nbytes(shape, self.dtypes[name]))
            except BaseException:
                for pointer in pointers.values():
                    self._memory.free(pointer)
                raise
            buffers = state.buffers[n] = _Buffers(pointers, shapes)
        if state.batch != n:
            for name, pointer in buffers.pointers.items():
                if not context.set_tensor_address(name, pointer):
                    raise EngineRunError(f"{self.path}: TensorRT refused the address of tensor {name!r}")
            state.batch = n
        return buffers

    def _run(self, state: _ThreadState, buffers: _Buffers) -> None:
        n = state.batch
        if not self.cuda_graph or n in self.graph_failures:
            self._execute(state)
            return
        if buffers.graph is None:
            # trtexec's sequence: one enqueue outside the capture (so TensorRT's initialisation work is not
            # captured), synchronized, then the captured enqueue. This run's outputs come from the first.
            self._execute(state)
            self._memory.synchronize(state.stream)
            try:
                buffers.graph = self._memory.capture(state.stream, lambda: self._execute(state))
            except (EngineRunError, CudaError) as exc:  # the capture was ended and its graph freed
                self._graph_failed(n, exc)
                return
        self._memory.launch(buffers.graph, state.stream)

    def _graph_failed(self, n: int, exc: Exception) -> None:
        """Remember that batch size ``n`` cannot be captured; warn once (trtexec warns and runs without)."""
        with self._lock:
            first = n not in self.graph_failures
            self.graph_failures[n] = str(exc)
        if first:
            warnings.warn(
                f"{self.path}: capturing a CUDA graph at batch size {n} failed ({exc}); batch size {n} runs without "
                "CUDA graphs from now on (plain execute_async_v3). Engines with work TensorRT cannot capture "
                "(data-dependent shapes, e.g. some NMS layers) do this; load with cuda_graph=False to skip the try",
                CudaGraphFallbackWarning, stacklevel=4)

    def _execute(self, state: _ThreadState) -> None:
        if not state.context.execute_async_v3(self._memory.stream_handle(state.stream)):
            raise EngineRunError(f"{self.path}: TensorRT execute_async_v3 failed (TensorRT's messages above say why)")

    def _numpy_outputs(self, state: _ThreadState, buffers: _Buffers) -> list[np.ndarray]:
        outputs = []
        for name in self.output_names:
            array = np.empty(buffers.shapes[name], dtype=self.dtypes[name])
            self._memory.to_host(array, buffers.pointers[name], state.stream)
            outputs.append(array)
        return outputs

    def _torch_outputs(self, state: _ThreadState, buffers: _Buffers) -> list[Any]:
        import torch

        outputs = []
        for name in self.output_names:
            out = torch.empty(buffers.shapes[name], dtype=_torch_dtype(self.dtypes[name]), device=self._memory.torch_device)
            nbytes = _nbytes(buffers.shapes[name], self.dtypes[name])
            self._memory.device_to_device(out.data_ptr(), buffers.pointers[name], nbytes, state.stream)
            outputs.append(out)
        return outputs

    def _torch_input(self, batch: Any) -> Any:
        return batch.to(device=self._memory.torch_device, dtype=_torch_dtype(self.dtypes[self.input_name])).contiguous()

    @property
    def options(self) -> dict[str, Any]:
        """The run options a benchmark report records: the source variant, CUDA graphs on or off."""
        return {"variant": self.variant, "cuda_graph": self.cuda_graph}

    # ---- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Free every thread's device buffers, graphs, stream and context (also done when collected)."""
        self._closed = True
        self._finalizer()


def _release(memory: DeviceMemory, states: dict) -> None:
    while states:
        _release_state(memory, states.popitem()[1])


def _release_state(memory: DeviceMemory, state: _ThreadState) -> None:
    memory.activate()
    for buffers in state.buffers.values():
        if buffers.graph is not None:
            memory.free_graph(buffers.graph)
        for pointer in buffers.pointers.values():
            memory.free(pointer)
    memory.destroy_stream(state.stream)
    state.buffers.clear()
    state.context = None


def _device_index(device: str) -> int:
    device = str(device)
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f"TensorRT engines run on a CUDA GPU: device must be 'cuda' or 'cuda:N', got {device!r} "
                     "(ssd-runtime ... --device cuda)")


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _final_dtype(name: str, array: Any) -> Any:
    """Outputs as the Backend interface promises them: labels and counts int64, the rest float32."""
    integer = name in ("labels", "num_detections")
    if isinstance(array, np.ndarray):
        return array.astype(np.int64 if integer else np.float32, copy=False)
    return array.long() if integer else array.float()


def _torch_dtype(dtype: np.dtype) -> Any:
    """The torch dtype of the same name (float32, float16, uint8, int8, int32, int64, bool)."""
    import torch

    return getattr(torch, dtype.name)


def _numpy_dtype_of(tensor: Any) -> np.dtype:
    """The NumPy dtype named like a torch tensor's dtype (bfloat16 and others NumPy lacks: void)."""
    try:
        return np.dtype(str(tensor.dtype).removeprefix("torch."))
    except TypeError:
        return np.dtype("V1")
