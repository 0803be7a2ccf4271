"""Backends: one small interface, found through a registry of dotted names imported only when used.

A backend turns a preprocessed batch into the raw network outputs. :class:`Backend` declares every
member a caller uses (the Detector, the evaluation, the benchmark, the parity and engine checks), and
each registered class provides all of them (``tests/ssd_runtime/test_backends.py`` checks it)::

    class Backend(Protocol):
        spec: ModelSpec            # read from the model file (classes, priors, preprocessing)
        path: Path | None          # the model file it was loaded from
        input_kind: str            # "float32-nchw" (N, 3, S, S) normalized | "uint8-nhwc" (N, S, S, 3)
        output_kind: str           # "raw" (locs, class_logits) | "detections" (NMS inside the model)
        end2end: End2EndConfig | None  # the settings baked into a "detections" model; None for raw ones
        device: str                # "cpu", "cuda:0", ...: where infer() leaves its outputs
        variant: str | None        # the exported variant (ssd_runtime.variants); None for a checkpoint
        precision: str | None      # what the network computes in: "fp32" | "fp16" | "int8"
                                   # (both None for a TensorRT plan trusted without its sidecar)
        options: dict              # the run options, as plain data (what a benchmark report records)
        def infer(self, batch) -> tuple[locs, class_logits]
        def close(self) -> None    # release what it holds; infer refuses afterwards
        @classmethod
        def load(cls, path, *, device, **options) -> Backend

``batch`` is a NumPy array (host) or a torch tensor (on ``device``); ``locs`` (N, P, 4) and
``class_logits`` (N, P, C) are float32 NumPy arrays (host backends) or torch tensors on ``device``.
``infer`` must be safe to call from several threads at once.

End-to-end models (decode and NMS inside: the ``end2end`` ONNX variant, a TensorRT engine built from
it) have ``output_kind = "detections"`` and an ``end2end`` config
(:class:`~ssd_runtime.onnx_model.End2EndConfig`: the settings baked in); their ``infer`` returns
``(boxes (N, K, 4) fractional xyxy, scores (N, K), labels (N, K) int64, num_detections (N,))`` as
:mod:`ssd_runtime.end2end` describes, and the Detector skips its own postprocess.

The registry maps a file kind (suffix) to ``"module:Class"`` strings; the class is imported the first
time a file of that kind is loaded. That is how the PyTorch-checkpoint backend, which needs the model
class and lives in ``ssd_train``, serves ``Detector.load("model.pt")`` while ``ssd_runtime`` never
imports ``ssd_train``. A new backend is one new module plus one line in :data:`BACKENDS`.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ssd_runtime.errors import ToolkitError
from ssd_runtime.spec import ModelSpec

if TYPE_CHECKING:  # for the annotation only: the registry imports no model-file reader
    from ssd_runtime.onnx_model import End2EndConfig

__all__ = [
    "BACKENDS", "PROTOCOL_MEMBERS", "Backend", "BackendClosedError", "BackendError", "backend_class", "resolve_backend",
    "to_numpy",
]

#: file kind (suffix) -> backend name; backend name -> "module:Class" (imported lazily).
FILE_KINDS: dict[str, str] = {
    ".onnx": "onnxruntime",
    ".pt": "torch",
    ".pth": "torch",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
}
BACKENDS: dict[str, str] = {
    "onnxruntime": "ssd_runtime.backends.onnxruntime:OrtBackend",
    "torch": "ssd_train.backend:TorchCheckpointBackend",
    "tensorrt": "ssd_runtime.backends.tensorrt:TensorRTBackend",
    "openvino": "ssd_runtime.backends.openvino:OpenVinoBackend",  # .onnx files too, by name only
}
#: What to install when a backend's module cannot be imported.
_INSTALL_HINTS = {
    "onnxruntime": "pip install 'ssd300-toolkit[ort]' (or onnxruntime-gpu for CUDA)",
    "torch": "pip install 'ssd300-toolkit[train]' (torch, torchvision)",
    "openvino": "pip install 'ssd300-toolkit[openvino]'",
    "tensorrt": "pip install 'ssd300-toolkit[tensorrt-cu13]' on a CUDA 13 driver, '[tensorrt-cu12]' on a CUDA 12 "
    "one (TensorRT 10/11 with cuda-bindings of that major; nvidia-smi shows the driver's); on Jetson TensorRT "
    "comes with JetPack",
}


class BackendError(ValueError):
    """No backend for a file, an unknown backend name, or a backend that cannot be imported."""


class BackendClosedError(ToolkitError, RuntimeError):
    """``infer`` on a backend after its ``close()``."""


@runtime_checkable
class Backend(Protocol):
    """What every backend provides (the module docstring says what each member holds)."""

    spec: ModelSpec
    path: Path | None
    input_kind: str
    output_kind: str
    end2end: End2EndConfig | None
    device: str
    variant: str | None
    precision: str | None
    options: dict[str, Any]

    def infer(self, batch: Any) -> tuple[Any, ...]: ...

    def close(self) -> None: ...

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str, **options: Any) -> Backend: ...


#: The members :class:`Backend` declares (its attributes, then its methods), read off the class itself.
PROTOCOL_MEMBERS: tuple[str, ...] = (*Backend.__annotations__, *(
    name for name, value in vars(Backend).items()
    if not name.startswith("_") and (callable(value) or isinstance(value, classmethod))
))


def resolve_backend(path: str | os.PathLike, backend: str = "auto") -> str:
    """The backend name for ``path``: ``backend`` itself, or, for "auto", the one its suffix maps to."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise BackendError(f"unknown backend {backend!r}; choose 'auto' or one of {', '.join(BACKENDS)}")
        return backend
    suffix = Path(path).suffix.lower()
    if suffix not in FILE_KINDS:
        raise BackendError(
            f"{path}: no backend for files ending in {suffix or '(no suffix)'!r}; known kinds: "
            f"{', '.join(sorted(FILE_KINDS))} - or pass backend= one of {', '.join(BACKENDS)}"
        )
    return FILE_KINDS[suffix]


def backend_class(name: str) -> type:
    """Import and return the class registered under ``name`` (the first use imports its module)."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module_name, _, class_name = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BackendError(
            f"backend {name!r} ({BACKENDS[name]}) is not available: {exc}; {_INSTALL_HINTS.get(name, '')}"
        ) from exc
    try:
        return getattr(module, class_name)
    except AttributeError as exc:
        raise BackendError(f"backend {name!r}: module {module_name} has no class {class_name}") from exc


def to_numpy(array: Any):
    """float32 NumPy view/copy of a backend output (a torch tensor is copied to the host)."""
    import numpy as np

    if isinstance(array, np.ndarray):
        return array if array.dtype == np.float32 else array.astype(np.float32)
    return array.detach().float().cpu().numpy()
