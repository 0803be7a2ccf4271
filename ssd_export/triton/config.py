"""Triton model configurations (``config.pbtxt``) of the toolkit's model repository, as data then text.

Each builder returns a plain dict laid out like Triton's ``ModelConfig`` protobuf (field names as in
``model_config.proto``); :func:`render_pbtxt` writes it in the protobuf text format. Enum values are
:class:`Enum` (written bare), repeated messages are lists of dicts, repeated scalars are lists, maps
(``input_map``, ``output_map``) are dicts. Nothing here imports tritonclient: the tests parse every
rendered config into tritonclient's ``model_config_pb2.ModelConfig``.

Batching: with ``max_batch_size > 0`` the dims of each tensor exclude the batch (Triton adds it); a
model whose graph has a static batch is served with ``max_batch_size: 0`` and full dims, without
dynamic batching (Triton would hand it smaller batches than the graph takes).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Enum",
    "TensorSpec",
    "ensemble_config",
    "network_config",
    "postprocess_config",
    "render_pbtxt",
    "triton_dtype",
]

#: NumPy dtype name -> Triton data type (``model_config.proto`` DataType).
TRITON_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
}  # fmt: skip


@dataclass(frozen=True)
class Enum:
    """A protobuf enum value, written without quotes (``TYPE_FP32``, ``KIND_GPU``)."""

    name: str


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, NumPy dtype name, full shape with the batch first (-1: dynamic)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def triton_dtype(dtype: str) -> Enum:
    """NumPy dtype name (``float32``) -> Triton's ``TYPE_FP32``; anything else is a ValueError."""
    if dtype not in TRITON_DTYPES:
        raise ValueError(f"no Triton data type for {dtype!r} (known: {', '.join(TRITON_DTYPES)})")
    return Enum(TRITON_DTYPES[dtype])


def _tensor(tensor: TensorSpec, batching: bool) -> dict:
    """One input/output entry; with batching the batch dim is dropped (a (N,) tensor: dims [1] + reshape [])."""
    entry = {"name": tensor.name, "data_type": triton_dtype(tensor.dtype)}
    if not batching:
        return {**entry, "dims": list(tensor.shape)}
    dims = list(tensor.shape[1:])
    if not dims:  # (N,) per batch: Triton needs dims [1] and a reshape to a scalar per item
        return {**entry, "dims": [1], "reshape": {"shape": []}}
    return {**entry, "dims": dims}


def _model(name: str, kind: dict, max_batch_size: int, inputs: list[TensorSpec], outputs: list[TensorSpec],
           preferred: tuple[int, ...] = (), queue_delay_us: int = 0) -> dict:
    """The fields every model shares, in Triton's documentation order; ``dynamic_batching`` when batching."""
    batching = max_batch_size > 0
    config = {"name": name, **kind, "max_batch_size": int(max_batch_size),
              "input": [_tensor(t, batching) for t in inputs], "output": [_tensor(t, batching) for t in outputs]}
    if batching:
        dynamic: dict = {}
        if preferred:
            dynamic["preferred_batch_size"] = list(preferred)
        if queue_delay_us:
            dynamic["max_queue_delay_microseconds"] = int(queue_delay_us)
        config["dynamic_batching"] = dynamic
    return config


def network_config(
    name: str,
    platform: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    *,
    max_batch_size: int,
    preferred_batch_sizes: tuple[int, ...] = (),
    max_queue_delay_us: int = 0,
    instances: int = 1,
    gpus: tuple[int, ...] | None = None,
) -> dict:
    """The network (``onnxruntime_onnx`` or ``tensorrt_plan``): its I/O, batching and instance groups.

    gpus: None -> KIND_CPU (ONNX Runtime on the CPU; a TensorRT plan gets KIND_GPU on every GPU);
    a tuple -> KIND_GPU on those GPU ids, ``instances`` on each.
    """
    group: dict = {"count": int(instances)}
    if gpus is None and platform != "tensorrt_plan":
        group["kind"] = Enum("KIND_CPU")
    else:
        group["kind"] = Enum("KIND_GPU")
        if gpus:
            group["gpus"] = [int(g) for g in gpus]
    config = _model(name, {"platform": platform}, max_batch_size, inputs, outputs, preferred_batch_sizes,
                    max_queue_delay_us)
    return {**config, "instance_group": [group]}


def postprocess_config(
    name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], *, max_batch_size: int, instances: int
) -> dict:
    """The Python-backend decode + NMS: the network's raw outputs in, padded detections out, on the CPU.

    Dynamic batching without delay: requests already queued reach one ``execute`` call together.
    """
    config = _model(name, {"backend": "python"}, max_batch_size, inputs, outputs)
    return {**config, "instance_group": [{"count": int(instances), "kind": Enum("KIND_CPU")}]}


def ensemble_config(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    steps: list[tuple[str, dict[str, str], dict[str, str]]],
    *,
    max_batch_size: int,
) -> dict:
    """An ensemble: steps (model name, {model input: ensemble tensor}, {model output: ensemble tensor})."""
    config = _model(name, {"platform": "ensemble"}, max_batch_size, inputs, outputs)
    config.pop("dynamic_batching", None)  # the composing models batch; an ensemble has no batcher of its own
    return {
        **config,
        "ensemble_scheduling": {
            "step": [
                {"model_name": model, "model_version": -1, "input_map": dict(input_map),
                 "output_map": dict(output_map)}
                for model, input_map, output_map in steps
            ]
        },
    }


def render_pbtxt(config: dict) -> str:
    """A config dict (see the module docstring) -> protobuf text format, two-space indented."""
    return "\n".join(_fields(config, "")) + "\n"


def _scalar(value: object) -> str:
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {type(value).__name__} {value!r} into a config.pbtxt")


def _fields(message: dict, indent: str) -> list[str]:
    lines: list[str] = []
    for key, value in message.items():
        if isinstance(value, dict) and key in ("input_map", "output_map"):
            for map_key, map_value in value.items():  # map<string, string>: one entry each
                lines.append(f"{indent}{key} {{ key: {_scalar(map_key)} value: {_scalar(map_value)} }}")
        elif isinstance(value, dict):
            lines += [f"{indent}{key} {{", *_fields(value, indent + "  "), f"{indent}}}"]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{indent}{key} [")
            for i, item in enumerate(value):
                comma = "," if i < len(value) - 1 else ""
                lines += [f"{indent}  {{", *_fields(item, indent + "    "), f"{indent}  }}{comma}"]
            lines.append(f"{indent}]")
        elif isinstance(value, list):
            lines.append(f"{indent}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{indent}{key}: {_scalar(value)}")
    return lines
