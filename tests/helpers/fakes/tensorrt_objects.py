"""The classes of the FAKE ``tensorrt`` module (see tests/helpers/fakes/tensorrt.py): logger, builder, parser.

The runtime side (Runtime, ICudaEngine, IExecutionContext) is in tests/helpers/fakes/tensorrt_runtime.py.

Only for unit tests of the toolkit's control flow. Each class is re-made per fake module (bound to
its major's name list); public attributes outside the list raise AttributeError. The fake reads its
own objects only through underscore attributes, so the usage records hold only what the code under
test touched.
"""
from __future__ import annotations

import json

from tests.helpers.fakes.tensorrt import (
    CACHE_MAGIC,
    PLAN_MAGIC,
    SUPPORTED_OPS,
    VERSIONS,
    Dims,
    FakeState,
    IHostMemory,
    _Strict,
    onnx_dtype_name,
)

#: The device the fake pretends to time kernels on (recorded in its timing caches).
FAKE_DEVICE = "FAKE GPU (host memory)"


def make_classes(state: FakeState, enums: dict) -> dict[str, type]:
    """The fake's classes for one module, each bound to ``state`` (its major's name list)."""
    from tests.helpers.fakes.tensorrt_runtime import ICudaEngine, IExecutionContext, Runtime

    severity = enums["ILogger.Severity"]
    bases = {
        "ILogger": ILogger, "Logger": Logger, "Builder": Builder, "INetworkDefinition": INetworkDefinition,
        "ITensor": ITensor, "IBuilderConfig": IBuilderConfig, "IOptimizationProfile": IOptimizationProfile,
        "ITimingCache": ITimingCache, "OnnxParser": OnnxParser, "ParserError": ParserError, "Runtime": Runtime,
        "ICudaEngine": ICudaEngine, "IExecutionContext": IExecutionContext,
    }  # fmt: skip
    classes: dict[str, type] = {}
    for name, base in bases.items():
        namespace = {"_state": state, "_trt_name": name, "_enums": enums, "_classes": classes}
        if name in ("ILogger", "Logger"):
            namespace["Severity"] = severity
            namespace.update(severity._members)  # export_values(): trt.ILogger.WARNING
        parents = (classes["ILogger"],) if name == "Logger" else (base,)
        if name == "Logger":
            namespace.update({k: v for k, v in Logger.__dict__.items() if k in ("__init__", "log")})
        classes[name] = type(name, parents, namespace)
    return classes


class ILogger(_Strict):
    """Base of loggers; a subclass overrides ``log(severity, msg)`` (TensorRT's PyLogger trampoline)."""

    def __init__(self) -> None:
        pass

    def log(self, severity, msg: str) -> None:
        raise NotImplementedError("ILogger.log is pure virtual")


class Logger(ILogger):
    def __init__(self, min_severity=None) -> None:
        self._min = min_severity

    def log(self, severity, msg: str) -> None:
        pass  # the real default logger prints to stderr; the fake keeps tests quiet


def _log(logger, enums, level: str, msg: str) -> None:
    # object.__getattribute__: the fake's own call must not count as a use of Logger.log by the code under test
    object.__getattribute__(logger, "log")(enums["ILogger.Severity"]._members[level], msg)


class ITensor(_Strict):
    def __init__(self, name: str, shape: Dims, dtype) -> None:
        self._name, self._shape, self._dtype = name, shape, dtype

    name = property(lambda self: self._name)
    shape = property(lambda self: self._shape)
    dtype = property(lambda self: self._dtype)


class INetworkDefinition(_Strict):
    def __init__(self, flags: int) -> None:
        members = self._enums["NetworkDefinitionCreationFlag"]._members
        self._strongly_typed = bool(flags & (1 << int(members["STRONGLY_TYPED"])))
        if self._state.major == "11.1":
            self._strongly_typed = True  # "always enabled" in 11
        self._flags = flags
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._onnx: bytes | None = None

    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]


class IOptimizationProfile(_Strict):
    def __init__(self) -> None:
        self._shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min, opt, max) -> None:  # TensorRT's argument names
        shapes = tuple(Dims(int(d) for d in s) for s in (min, opt, max))
        if len({len(s) for s in shapes}) != 1 or any(a > b for a, b in zip(shapes[0], shapes[1])) or any(
            a > b for a, b in zip(shapes[1], shapes[2])
        ):
            raise RuntimeError(f"Invalid shapes for {input}: min {shapes[0]}, opt {shapes[1]}, max {shapes[2]}")
        self._shapes[input] = shapes

    def get_shape(self, input: str) -> list[Dims]:
        return list(self._shapes[input])


class ITimingCache(_Strict):
    def __init__(self, entries: dict[str, str], device: str) -> None:
        self._entries, self._device = dict(entries), device

    def serialize(self) -> IHostMemory:
        body = json.dumps({"device": self._device, "entries": self._entries}, sort_keys=True).encode()
        return IHostMemory(CACHE_MAGIC + body)

    def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if input_cache._device != self._device and not ignore_mismatch:
            return False
        self._entries.update(input_cache._entries)
        return True


class IBuilderConfig(_Strict):
    def __init__(self) -> None:
        # TF32 is "Enabled by default" (NvInfer.h 10.3: 8317-8320; 11.1: 9973-9976)
        self._flags = 1 << int(self._enums["BuilderFlag"]._members["TF32"])
        self._pools: dict[int, int] = {}
        self._profiles: list[IOptimizationProfile] = []
        self._opt_level = 3
        self._hw_level = self._enums["HardwareCompatibilityLevel"]._members["NONE"]
        self._cache: ITimingCache | None = None

    def set_memory_pool_limit(self, pool, pool_size: int) -> None:
        self._pools[int(pool)] = int(pool_size)

    def set_flag(self, flag) -> None:
        self._flags |= 1 << int(flag)

    def clear_flag(self, flag) -> None:
        self._flags &= ~(1 << int(flag))

    def get_flag(self, flag) -> bool:
        return bool(self._flags & (1 << int(flag)))

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def _get_opt(self):
        return self._opt_level

    def _set_opt(self, level: int) -> None:
        if not 0 <= int(level) <= 5:
            raise ValueError(f"builder_optimization_level must be in [0, 5], got {level}")
        self._opt_level = int(level)

    builder_optimization_level = property(_get_opt, _set_opt)
    hardware_compatibility_level = property(lambda self: self._hw_level, lambda self, v: setattr(self, "_hw_level", v))

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache | None:
        blob = bytes(serialized_timing_cache)
        if not blob:
            return self._classes["ITimingCache"]({}, FAKE_DEVICE)
        if not blob.startswith(CACHE_MAGIC):
            return None  # the real call logs an error and returns None for a blob it cannot read
        data = json.loads(blob[len(CACHE_MAGIC):])
        return self._classes["ITimingCache"](data["entries"], data["device"])

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if cache._device != FAKE_DEVICE and not ignore_mismatch:
            return False
        self._cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._cache

    def _flag_names(self) -> list[str]:
        members = self._enums["BuilderFlag"]._members
        return sorted(n for n, v in members.items() if self._flags & (1 << int(v)))


class ParserError(_Strict):
    def __init__(self, code, desc: str, node: int, node_name: str, node_operator: str) -> None:
        self._fields = (code, desc, node, node_name, node_operator)

    def code(self):
        return self._fields[0]

    def desc(self) -> str:
        return self._fields[1]

    def node(self) -> int:
        return self._fields[2]

    def node_name(self) -> str:
        return self._fields[3]

    def node_operator(self) -> str:
        return self._fields[4]

    def __str__(self) -> str:  # onnx2trt::parserErrorStr's layout
        code, desc, node, name, op = self._fields
        return f"In node {node} with name: {name} and operator: {op} (importModel): {code.name}: {desc}"


class OnnxParser(_Strict):
    def __init__(self, network: INetworkDefinition, logger) -> None:
        self._network, self._logger, self._errors = network, logger, []

    def parse(self, model: bytes, path: str | None = None) -> bool:
        return self._parse(bytes(model))

    def parse_from_file(self, model: str) -> bool:
        try:
            with open(model, "rb") as f:
                data = f.read()
        except OSError as exc:
            return self._error("MODEL_DESERIALIZE_FAILED", f"Failed to open file {model}: {exc}", -1, "", "")
        return self._parse(data)

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, index: int) -> ParserError:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def _error(self, code: str, desc: str, node: int, name: str, op: str) -> bool:
        members = self._enums["ErrorCode"]._members
        self._errors.append(self._classes["ParserError"](members[code], desc, node, name, op))
        return False

    def _parse(self, data: bytes) -> bool:
        import onnx

        try:
            model = onnx.load_from_string(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
            return self._error("MODEL_DESERIALIZE_FAILED", f"Failed to parse ONNX model: {exc}", -1, "", "")
        if not model.graph.node:
            return self._error("INVALID_GRAPH", "Graph has no nodes", -1, "", "")
        for index, node in enumerate(model.graph.node):
            if node.op_type not in SUPPORTED_OPS or node.domain not in ("", "ai.onnx"):
                self._error("UNSUPPORTED_NODE", f"No importer registered for op: {node.op_type}. Attempting to import "
                            'as plugin. Assertion failed: creator && "Plugin not found, are the plugin name, version, '
                            'and namespace correct?"', index, node.name, node.op_type)
        if self._errors:
            return False
        dtypes = self._enums["DataType"]._members
        initializers = {i.name for i in model.graph.initializer}

        def tensor(value):
            dims = Dims(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
            return self._classes["ITensor"](value.name, dims, dtypes[onnx_dtype_name(value.type.tensor_type.elem_type)])

        self._network._inputs = [tensor(v) for v in model.graph.input if v.name not in initializers]
        self._network._outputs = [tensor(v) for v in model.graph.output]
        self._network._onnx = data
        return True


class Builder(_Strict):
    def __init__(self, logger) -> None:
        self._logger = logger
        from tests.helpers.fakes.device_memory import current_device

        self._state.builder_devices.append(current_device())  # the device TensorRT would build on

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return self._classes["INetworkDefinition"](int(flags))

    def create_builder_config(self) -> IBuilderConfig:
        return self._classes["IBuilderConfig"]()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return self._classes["IOptimizationProfile"]()

    platform_has_fast_fp16 = property(lambda self: True)
    platform_has_fast_int8 = property(lambda self: True)

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        error = self._check(network, config)
        if error is not None:
            _log(self._logger, self._enums, "ERROR", error)
            return None
        flags = config._flag_names()
        profile = config._profiles[0]._shapes if config._profiles else {}
        header = {
            "tensorrt_version": VERSIONS[self._state.major],
            "strongly_typed": network._strongly_typed,
            "flags": flags,
            "workspace": config._pools.get(int(self._enums["MemoryPoolType"]._members["WORKSPACE"])),
            "optimization_level": config._opt_level,
            "hardware_compatibility": config._hw_level.name,
            "profile": {name: [list(s) for s in shapes] for name, shapes in profile.items()},
            "inputs": [[t._name, list(t._shape), t._dtype.name] for t in network._inputs],
            "outputs": [[t._name, list(t._shape), t._dtype.name] for t in network._outputs],
        }
        if config._cache is not None:  # the fake "times" one tactic per input shape
            for name, shapes in header["profile"].items():
                config._cache._entries[f"{name}:{shapes[1]}"] = f"tactic for {name} at {shapes[1]}"
        self._state.builds.append(header)
        return IHostMemory(PLAN_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + network._onnx)

    def _check(self, network: INetworkDefinition, config: IBuilderConfig) -> str | None:
        """The error TensorRT would log for this network and config, or None."""
        if self._state.fail_build == "out_of_memory":
            return "[defaultAllocator.cpp::allocate::31] Error Code 1: Cuda Runtime (out of memory)"
        if self._state.fail_build == "internal":
            return "[optimizer.cpp::computeCosts::4321] Error Code 10: Internal Error (Could not find any implementation)"
        if network._onnx is None or not network._outputs:
            return "[network.cpp::validate::2789] Error Code 4: Internal Error (Network must have at least one output)"
        flags = config._flag_names()
        precision = [f for f in flags if f in ("FP16", "INT8", "BF16")]
        if network._strongly_typed and precision:
            return (f"[builderConfig.cpp::validate::345] Error Code 4: API Usage Error (BuilderFlag::k{precision[0]} "
                    "is not allowed with a strongly typed network)")
        if len(config._profiles) > 1:
            return "the fake emulates one optimization profile"
        profile = config._profiles[0]._shapes if config._profiles else {}
        inputs = {t._name: t._shape for t in network._inputs}
        for name in profile:
            if name not in inputs:
                return f"[optimizationProfile.cpp::setDimensions] Error Code 3: API Usage Error ({name} is not a network input)"
        for name, shape in inputs.items():
            if -1 in shape and name not in profile:
                return ("[network.cpp::validate::3456] Error Code 4: Internal Error (Network has dynamic or shape "
                        "inputs, but no optimization profile has been defined.)")
            for which, dims in zip(("min", "opt", "max"), profile.get(name, ())):
                if len(dims) != len(shape) or any(s != -1 and d != s for d, s in zip(dims, shape)):
                    return (f"[network.cpp::validate::3500] Error Code 4: Internal Error ({name}: {which} dimensions "
                            f"{list(dims)} in profile 0 do not match the network definition {list(shape)})")
        return None
