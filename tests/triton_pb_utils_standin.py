"""A stand-in for Triton's ``triton_python_backend_utils``, used ONLY by the tests of the Triton postprocess.

Triton Inference Server cannot run here, so the tests load the generated ``model.py`` with this module
installed as ``sys.modules["triton_python_backend_utils"]``. It provides the few names the model uses,
with the real module's signatures and behaviour (python_backend's ``triton_python_backend_utils.py``):
``Tensor(name, array)`` with ``name()``/``as_numpy()``, ``InferenceResponse(output_tensors, error=None)``
(output_tensors must be a list), ``TritonError(msg)``, ``get_input_tensor_by_name``,
``get_input_config_by_name``, ``get_output_config_by_name``. Requests are built by the tests as
:class:`InferenceRequest` with inputs and Triton's JSON string of request parameters.
"""
from __future__ import annotations

import json

import numpy as np

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
    def __init__(self, msg: str) -> None:
        self._msg = msg

    def message(self) -> str:
        return self._msg


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
