"""A stand-in for Triton's ``triton_python_backend_utils``, used ONLY by the tests of the Triton postprocess.

For fast tests of single requests and batches, the tests load the generated ``model.py`` with this module
installed as ``sys.modules["triton_python_backend_utils"]``. It provides the few names the model uses,
with the real module's signatures and behaviour (python_backend's ``triton_python_backend_utils.py``):
``Tensor(name, array)`` with ``name()``/``as_numpy()``, ``InferenceResponse(output_tensors, error=None)``
(output_tensors must be a list), ``TritonError(msg)``, ``get_input_tensor_by_name``,
``get_input_config_by_name``, ``get_output_config_by_name``, ``TritonError(msg, code)`` with its codes and
``Logger``. Tests against the real server are in tests/ssd_export/test_triton_server.py. Requests are built by the tests as
:class:`InferenceRequest` with inputs and Triton's JSON string of request parameters.
:func:`load_model` imports a generated ``model.py`` against this module and initializes it with the
arguments Triton passes (:func:`model_config` gives the config as the backend receives it).
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

#: Triton's TYPE_* names of the NumPy dtypes the model may emit.
TRITON_TYPES = {np.dtype(np.float32): "TYPE_FP32", np.dtype(np.float16): "TYPE_FP16",
                np.dtype(np.int64): "TYPE_INT64", np.dtype(np.uint8): "TYPE_UINT8"}


class TritonModelException(Exception):
    pass


class Tensor:
    def __init__(self, name: str, numpy_array: np.ndarray) -> None:
        if not isinstance(numpy_array, np.ndarray) or numpy_array.dtype not in TRITON_TYPES:
            raise TritonModelException(f"tensor {name!r}: unsupported array {type(numpy_array).__name__}")
        self._name, self._array = name, numpy_array

    def name(self) -> str:
        return self._name

    def triton_dtype(self) -> str:
        return TRITON_TYPES[self._array.dtype]

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceRequest:
    """A request as the backend hands it to ``execute``: input tensors and the parameters as JSON."""

    def __init__(self, inputs: list[Tensor], parameters: dict | None = None) -> None:
        self._inputs = inputs
        self._parameters = json.dumps(parameters or {})

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def parameters(self) -> str:
        return self._parameters


class TritonError:
    """python_backend r24.10 ``src/pb_stub.cc`` 1640-1690: ``TritonError(message, code=INTERNAL)``, codes as
    class attributes (TRITONSERVER_Error_Code values), ``code()`` and ``message()``."""

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(1, 9)

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        if message is None or code is None:
            raise TypeError("TritonError(message, code): neither may be None")
        self._msg, self._code = message, code

    def message(self) -> str:
        return self._msg

    def code(self) -> int:
        return self._code


class Logger:
    """python_backend's ``pb_utils.Logger`` static methods; the messages are kept in :data:`LOGGED` for the tests."""

    @staticmethod
    def log_info(message: str) -> None:
        LOGGED.append(("info", message))

    @staticmethod
    def log_warn(message: str) -> None:
        LOGGED.append(("warn", message))

    @staticmethod
    def log_error(message: str) -> None:
        LOGGED.append(("error", message))


#: (level, message) of every Logger call, in order (tests clear it).
LOGGED: list[tuple[str, str]] = []


class InferenceResponse:
    def __init__(self, output_tensors: list, error: TritonError | None = None) -> None:
        if type(output_tensors) is not list:
            raise TritonModelException('"output_tensors" must be a list.')
        self._output_tensors, self._err = output_tensors, error

    def output_tensors(self) -> list:
        return self._output_tensors

    def has_error(self) -> bool:
        return self._err is not None

    def error(self) -> TritonError | None:
        return self._err


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in inference_request.inputs() if t.name() == name), None)


def get_input_config_by_name(model_config: dict, name: str) -> dict | None:
    return next((t for t in model_config.get("input", []) if t["name"] == name), None)


def get_output_config_by_name(model_config: dict, name: str) -> dict | None:
    return next((t for t in model_config.get("output", []) if t["name"] == name), None)


def model_config(folder: Path) -> dict:
    """``folder/config.pbtxt`` as the Python backend receives it: the ModelConfig protobuf as JSON
    (snake_case names; int64 fields such as dims become strings)."""
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def load_model(folder: Path):
    """Import ``folder/1/model.py`` with this module as ``triton_python_backend_utils``; initialize it as Triton does."""
    spec = importlib.util.spec_from_file_location(f"triton_model_{folder.name}_{id(folder)}", folder / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"triton_python_backend_utils": sys.modules[__name__]}):
        spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({
        "model_config": json.dumps(model_config(folder)), "model_instance_kind": "CPU",
        "model_instance_device_id": "0", "model_repository": str(folder), "model_version": "1",
        "model_name": folder.name,
    })
    return model
