"""The runtime classes of the FAKE ``tensorrt`` module (see tests/helpers/fakes/tensorrt.py): Runtime, ICudaEngine,
IExecutionContext. Only for unit tests: a "plan" is the fake builder's JSON header plus the ONNX, and the
execution context runs that ONNX in ONNX Runtime, reading inputs from and writing outputs to HOST pointers.
"""
from __future__ import annotations

import threading

import numpy as np

from tests.helpers.fakes.tensorrt import (
    VERSIONS,
    Dims,
    _Strict,
    host_array,
    numpy_dtype,
    read_fake_plan,
)
from tests.helpers.fakes.tensorrt_objects import _log


class Runtime(_Strict):
    def __init__(self, logger) -> None:
        self._logger, self._host_code = logger, False

    engine_host_code_allowed = property(lambda self: self._host_code,
                                        lambda self, v: setattr(self, "_host_code", bool(v)))

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        try:
            header, onnx_bytes = read_fake_plan(serialized_engine)
        except ValueError:
            _log(self._logger, self._enums, "ERROR", "[runtime.cpp::deserializeCudaEngine] Error Code 1: Serialization "
                 "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)")
            return None
        version = VERSIONS[self._state.major]
        if header["tensorrt_version"] != version:
            if "VERSION_COMPATIBLE" not in header["flags"]:
                _log(self._logger, self._enums, "ERROR", "[runtime.cpp::deserializeCudaEngine] Error Code 6: API Usage "
                     f"Error (The engine plan file is not compatible with this version of TensorRT, expecting library "
                     f"version {version} got {header['tensorrt_version']}, please rebuild.)")
                return None
            if not self._host_code:
                _log(self._logger, self._enums, "ERROR", "[runtime.cpp::deserializeCudaEngine] Error Code 1: "
                     "(engine host code is not allowed: set engine_host_code_allowed for a version-compatible plan)")
                return None
        return self._classes["ICudaEngine"](header, onnx_bytes)


class ICudaEngine(_Strict):
    def __init__(self, header: dict, onnx_bytes: bytes) -> None:
        self._header, self._onnx = header, onnx_bytes
        self._io = [(n, Dims(s), d, "INPUT") for n, s, d in header["inputs"]]
        self._io += [(n, Dims(s), d, "OUTPUT") for n, s, d in header["outputs"]]
        self._session = None
        self._lock = threading.Lock()

    num_io_tensors = property(lambda self: len(self._io))
    num_optimization_profiles = property(lambda self: 1)
    device_memory_size = property(lambda self: 1 << 20)
    device_memory_size_v2 = property(lambda self: 1 << 20)

    def _tensor(self, name: str):
        for entry in self._io:
            if entry[0] == name:
                return entry
        raise ValueError(f"fake engine has no tensor {name!r}")  # the real call returns invalid values

    def get_tensor_name(self, index: int) -> str:
        return self._io[index][0]

    def get_tensor_mode(self, name: str):
        return self._enums["TensorIOMode"]._members[self._tensor(name)[3]]

    def get_tensor_dtype(self, name: str):
        return self._enums["DataType"]._members[self._tensor(name)[2]]

    def get_tensor_shape(self, name: str) -> Dims:
        return self._tensor(name)[1]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        shapes = self._header["profile"].get(name)
        if shapes is None:
            static = self._tensor(name)[1]
            return [static, static, static]
        return [Dims(s) for s in shapes]

    def create_execution_context(self) -> IExecutionContext:
        return self._classes["IExecutionContext"](self)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.log_severity_level = 3
                model = _tf32_weights(self._onnx) if "TF32" in self._header["flags"] else self._onnx
                self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in self._session.get_outputs()]
        return dict(zip(names, self._session.run(None, feeds)))


def _tf32_weights(onnx_bytes: bytes) -> bytes:
    """The ONNX with every FP32 Conv weight initializer truncated to TF32 (the low 13 mantissa bits dropped):
    what TF32 kernels do to the weights (TensorRT also rounds the inputs; the fake does not)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    weights = {node.input[1] for node in model.graph.node if node.op_type == "Conv" and len(node.input) > 1}
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name in weights and tensor.data_type == onnx.TensorProto.FLOAT:
            bits = numpy_helper.to_array(tensor).astype(np.float32).view(np.int32) & np.int32(~((1 << 13) - 1))
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(bits.view(np.float32), tensor.name))
    return model.SerializeToString()


class IExecutionContext(_Strict):
    def __init__(self, engine: ICudaEngine) -> None:
        self._engine = engine
        self._shapes: dict[str, Dims] = {}
        self._addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        entry = self._engine._tensor(name)
        shape = Dims(int(d) for d in shape)
        low, _, high = self._profile(name)
        if entry[3] != "INPUT" or len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
            return False
        self._shapes[name] = shape
        return True

    def _profile(self, name: str) -> tuple[Dims, Dims, Dims]:
        shapes = self._engine._header["profile"].get(name)
        static = self._engine._tensor(name)[1]
        return tuple(Dims(s) for s in shapes) if shapes else (static, static, static)

    def get_tensor_shape(self, name: str) -> Dims:
        entry = self._engine._tensor(name)
        if entry[3] == "INPUT":
            return self._shapes.get(name, entry[1])
        batch = next(iter(self._shapes.values()), entry[1])[0] if self._shapes else -1
        return Dims(batch if d == -1 and i == 0 else d for i, d in enumerate(entry[1]))

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self._engine._tensor(name)
        self._addresses[name] = int(memory)
        return True

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        return profile_index == 0

    def get_max_output_size(self, name: str) -> int:
        shape = IExecutionContext.get_tensor_shape(self, name)
        return int(np.prod(shape)) * numpy_dtype(self._dtype(self._engine._tensor(name)[2])).itemsize

    def execute_async_v3(self, stream_handle: int) -> bool:
        feeds = {}
        for name, static, dtype, mode in self._engine._io:
            if name not in self._addresses:
                return False  # TensorRT logs "address is not set" and returns False
            if mode == "INPUT":
                shape = self._shapes.get(name, static)
                if -1 in shape:
                    return False
                feeds[name] = host_array(self._addresses[name], shape, numpy_dtype(self._dtype(dtype))).copy()
        outputs = self._engine._run(feeds)
        fp16 = "FP16" in self._engine._header["flags"]
        for name, _, dtype, mode in self._engine._io:
            if mode != "OUTPUT":
                continue
            value = outputs[name]
            if fp16 and value.dtype == np.float32:
                value = value.astype(np.float16).astype(np.float32)  # what FP16 kernels lose
            target = host_array(self._addresses[name], IExecutionContext.get_tensor_shape(self, name),
                                numpy_dtype(self._dtype(dtype)))
            target[...] = value
        return True

    def _dtype(self, name: str):
        return self._engine._enums["DataType"]._members[name]
