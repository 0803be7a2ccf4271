"""A FAKE ``tensorrt`` module for unit tests: not TensorRT, never used outside the tests.

What it is for: running the toolkit's own control flow around TensorRT - feature detection, network
flags, optimisation profiles, builder flags, timing caches, the listing of parser errors, the
sidecar logic, buffer and context bookkeeping - on machines without TensorRT or a GPU.

What it guarantees: :func:`fake_tensorrt` exposes ONLY the names that ``tests/data/tensorrt_api.json``
lists for the chosen major ("10.3" or "11.1"; each checked in NVIDIA's binding sources). Any other
public name - on the module, on an enum, on a class or on an object it returns - raises
AttributeError, as the real module does for a removed name. Every name the toolkit touches is recorded
in :data:`USAGE` (and every name it probed that is absent), for ``tests/test_tensorrt_api_surface.py``.
Enum values follow NVIDIA's headers where they matter (``STRONGLY_TYPED`` is 1 in 10.3, 0 in 11.1).

What it does not do: build anything. Its "plan" is a JSON header of the build settings followed by
the parsed ONNX; its execution context runs that ONNX with ONNX Runtime on HOST memory:
``set_tensor_address(name, pointer)`` takes raw host pointers (``numpy_array.ctypes.data``) and
``execute_async_v3`` reads the inputs from and writes the outputs to them. The TensorRT 10 FP16
builder flag is emulated by rounding the outputs through float16; ``BuilderFlag.TF32``, on by default as
in TensorRT, by truncating the FP32 convolution weights to TF32 (inputs are not rounded: the fake
under-states TF32's error, never over-states it). Test knobs live on
:func:`fake_state`, never on the module.
"""
from __future__ import annotations

import ctypes
import json
import types
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

API_PATH = Path(__file__).resolve().parents[2] / "data" / "tensorrt_api.json"  # tests/data
MAJORS = ("10.3", "11.1")
VERSIONS = {"10.3": "10.3.0", "11.1": "11.1.0"}
PLAN_MAGIC = b"FAKE-TENSORRT-PLAN\n"
CACHE_MAGIC = b"FAKE-TENSORRT-TIMING-CACHE\n"
#: ONNX operators the fake parser imports; any other is an UNSUPPORTED_NODE error (a real parser
#: supports many more; this set covers the toolkit's exports and the usual CNN operators).
SUPPORTED_OPS = frozenset((
    "Add", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "DequantizeLinear", "Div", "Exp",
    "Expand", "Flatten", "Gather", "GatherElements", "Gemm", "Greater", "GreaterOrEqual", "Identity", "MatMul",
    "MaxPool", "Mod", "Mul", "NonMaxSuppression", "Pow", "QuantizeLinear", "ReduceSum", "Relu", "Reshape",
    "ScatterND", "Shape", "Sigmoid", "Slice", "Softmax", "Sqrt", "Sub", "TopK", "Transpose", "Unsqueeze", "Where",
))  # fmt: skip

# Enum values from NVIDIA's headers (NvInfer.h, NvInferRuntimeBase.h, NvOnnxParser.h) at each ref.
_ENUMS = {
    "NetworkDefinitionCreationFlag": {"10.3": {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}, "11.1": {"STRONGLY_TYPED": 0}},
    "BuilderFlag": {"10.3": {"FP16": 0, "INT8": 1, "TF32": 6, "BF16": 17, "VERSION_COMPATIBLE": 13,
                             "EXCLUDE_LEAN_RUNTIME": 14},
                    "11.1": {"TF32": 6, "VERSION_COMPATIBLE": 12, "EXCLUDE_LEAN_RUNTIME": 13}},
    "MemoryPoolType": {"*": {"WORKSPACE": 0}},
    "HardwareCompatibilityLevel": {"10.3": {"NONE": 0, "AMPERE_PLUS": 1},
                                   "11.1": {"NONE": 0, "AMPERE_PLUS": 1, "SAME_COMPUTE_CAPABILITY": 2}},
    "TensorIOMode": {"*": {"NONE": 0, "INPUT": 1, "OUTPUT": 2}},
    "DataType": {"*": {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5, "BF16": 7, "INT64": 8}},
    "ErrorCode": {"*": {"MODEL_DESERIALIZE_FAILED": 3, "INVALID_GRAPH": 5, "INVALID_NODE": 6, "UNSUPPORTED_NODE": 8}},
    "ILogger.Severity": {"*": {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}},
}  # fmt: skip
_NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
          "BOOL": np.bool_, "UINT8": np.uint8}  # fmt: skip
_ONNX_TYPES = {1: "FLOAT", 10: "HALF", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL"}


@cache
def load_api() -> dict:
    return json.loads(API_PATH.read_text())


def api_names(major: str) -> frozenset[str]:
    """The names ``tests/data/tensorrt_api.json`` lists as present in ``major``."""
    return frozenset(e["name"] for e in load_api()["names"] if e[major] is not None)


@dataclass
class Usage:
    """Names (``Class.member`` or module-level) the code under test touched, and those it probed but are absent."""

    accessed: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)


#: Per major, across the whole test session.
USAGE: dict[str, Usage] = {major: Usage() for major in MAJORS}


@dataclass
class FakeState:
    """Test knobs and records of one fake module.

    fail_build: None, "out_of_memory" (the allocator's CUDA error is logged) or "internal" (another
        logged error); build_serialized_network then returns None, as TensorRT does.
    builds: the header of every plan built (the settings the builder was given).
    builder_devices: the calling thread's current device (``tests.helpers.fakes.device_memory.current_device``)
        at each ``trt.Builder(...)``: TensorRT builds on the device current when the builder is created.
    """

    major: str
    fail_build: str | None = None
    builds: list[dict] = field(default_factory=list)
    builder_devices: list[int | None] = field(default_factory=list)

    def check(self, name: str) -> bool:
        usage = USAGE[self.major]
        if name in api_names(self.major):
            usage.accessed.add(name)
            return True
        usage.missing.add(name)
        return False


def _refuse(state: FakeState, name: str) -> AttributeError:
    return AttributeError(f"fake tensorrt {state.major}: no attribute {name!r} "
                          f"(not in tests/data/tensorrt_api.json for TensorRT {state.major})")


class _StrictMeta(type):
    """Class attributes (``trt.ILogger.Severity``) of the fake's own classes are checked against the list."""

    def __getattribute__(cls, name):
        if name.startswith("_") or "_state" not in type.__getattribute__(cls, "__dict__"):
            return type.__getattribute__(cls, name)
        state = type.__getattribute__(cls, "_state")
        qualified = f"{type.__getattribute__(cls, '_trt_name')}.{name}"
        if not state.check(qualified):
            raise _refuse(state, qualified)
        return type.__getattribute__(cls, name)


class _Strict(metaclass=_StrictMeta):
    """Objects whose public attributes are checked against the list (subclasses made per module)."""

    _trt_name = ""

    def __getattribute__(self, name):
        cls = type(self)
        if not name.startswith("_") and "_state" in cls.__dict__:
            qualified = f"{cls._trt_name}.{name}"
            if not cls._state.check(qualified):
                raise _refuse(cls._state, qualified)
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        cls = type(self)
        if not name.startswith("_") and "_state" in cls.__dict__:
            qualified = f"{cls._trt_name}.{name}"
            if not cls._state.check(qualified):
                raise _refuse(cls._state, qualified)
        object.__setattr__(self, name, value)


class _EnumValue(int):
    """An enum member: an int (``int(flag)``) that prints and compares like a pybind11 enum member."""

    def __new__(cls, enum: str, name: str, value: int):
        obj = int.__new__(cls, value)
        obj._enum, obj.name = enum, name
        return obj

    def __eq__(self, other):
        return isinstance(other, _EnumValue) and (other._enum, int(other)) == (self._enum, int(self))

    def __hash__(self):
        return hash((self._enum, int(self)))

    def __repr__(self):
        return f"<{self._enum}.{self.name}: {int(self)}>"

    __str__ = __repr__


class _Enum:
    """An enum namespace holding the members of one major; absent members raise AttributeError."""

    def __init__(self, state: FakeState, trt_name: str, members: dict[str, int]) -> None:
        self._state, self._trt_name = state, trt_name
        self._members = {n: _EnumValue(trt_name.split(".")[-1], n, v) for n, v in members.items()}

    def __getattr__(self, name):
        qualified = f"{self._trt_name}.{name}"
        if name.startswith("_") or not self._state.check(qualified) or name not in self._members:
            raise _refuse(self._state, qualified)
        return self._members[name]


class Dims(tuple):
    """A shape as TensorRT returns it (-1 marks a dynamic dimension)."""


class IHostMemory(bytes):
    """Serialized bytes (a plan, a timing cache); ``bytes(host_memory)`` copies them, as with the real buffer."""

    @property
    def nbytes(self) -> int:
        return len(self)


def fake_state(module: types.ModuleType) -> FakeState:
    """The knobs and records of a module made by :func:`fake_tensorrt`."""
    return module._fake_state


def read_fake_plan(plan: bytes) -> tuple[dict, bytes]:
    """(header, ONNX bytes) of a plan the fake built; ValueError for anything else."""
    if not bytes(plan).startswith(PLAN_MAGIC):
        raise ValueError("not a fake TensorRT plan")
    rest = bytes(plan)[len(PLAN_MAGIC):]
    header, _, onnx_bytes = rest.partition(b"\n")
    return json.loads(header), onnx_bytes


class _FakeModule(types.ModuleType):
    def __getattribute__(self, name):
        if name.startswith("_") and name != "__version__":
            return super().__getattribute__(name)
        state = super().__getattribute__("_fake_state")
        if not state.check(name):
            raise _refuse(state, name)
        return super().__getattribute__(name)


def fake_tensorrt(major: str) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module for TensorRT ``major`` ("10.3" or "11.1"); see the module docstring."""
    if major not in MAJORS:
        raise ValueError(f"fake tensorrt majors: {MAJORS}")
    from tests.helpers.fakes import tensorrt_objects as objects

    state = FakeState(major)
    module = _FakeModule("tensorrt", f"FAKE tensorrt {VERSIONS[major]} for unit tests (tests/helpers/fakes/tensorrt.py)")
    module._fake_state = state
    enums = {}
    for name, by_major in _ENUMS.items():
        members = by_major.get("*", by_major.get(major, {}))
        enums[name] = _Enum(state, name, members)
    classes = objects.make_classes(state, enums)
    for name, value in {**classes, **{n: e for n, e in enums.items() if "." not in n}}.items():
        setattr(module, name, value)
    module.__version__ = VERSIONS[major]
    module.nptype = lambda dtype: _nptype(dtype)
    module.volume = lambda shape: int(np.prod(list(shape), dtype=np.int64))
    return module


def _nptype(dtype: _EnumValue):
    if dtype.name not in _NUMPY:
        raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype: {dtype.name}")
    return _NUMPY[dtype.name]


def numpy_dtype(dtype: _EnumValue) -> np.dtype:
    return np.dtype(_nptype(dtype))


def onnx_dtype_name(elem_type: int) -> str:
    return _ONNX_TYPES[elem_type]


def host_array(pointer: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A NumPy view of host memory at ``pointer`` (what the fake reads and writes instead of device memory)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    buffer = (ctypes.c_uint8 * nbytes).from_address(pointer)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)

