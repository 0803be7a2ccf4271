"""OpenVINO backend for toolkit ONNX exports (``.onnx``, ``backend="openvino"``): Intel CPUs, GPUs, AUTO.

Loading: :func:`ssd_runtime.onnx_model.read_onnx_info` first, as for ONNX Runtime (external data checked
before any loader touches the file; spec, variant and end2end settings from the ``metadata_props``),
then ``openvino.Core().read_model`` and ``compile_model``. OpenVINO 2026.4 reads every variant unchanged:
``fp32``, ``fp16``, ``uint8-nhwc``, ``int8`` (the Q/DQ model: its CPU plugin fuses the Q/DQ pairs into
INT8 kernels, as TensorRT does) and ``end2end`` (its NMS tail: ``infer`` returns the four padded outputs
of :mod:`ssd_runtime.end2end`, ``labels`` and ``num_detections`` int64).

Outputs are found by the names the variant declares (:data:`ssd_runtime.variants.VARIANT_TABLE`): a
compiled output answers to every name of its tensor (OpenVINO folds the fp16 model's final Cast, so
``locs`` is also ``/pred_convs/Concat_12_output_0``); an output that lost its declared name is taken by
position, the graph's order.

Devices. ``device`` is the one device grammar's (:func:`ssd_runtime.options.check_device`) and says
where ``infer`` leaves its outputs: always ``"cpu"`` here (NumPy on the host), whichever Intel device
computes. That device is the ``openvino_device`` option, in OpenVINO's own names: ``"CPU"`` (default),
``"GPU"``/``"GPU.1"`` (Intel integrated or discrete), ``"AUTO"`` (the plugin picks) or ``"AUTO:GPU,CPU"``;
a device that is not present raises :class:`OpenVinoDeviceError` naming ``Core().available_devices``.

Precision, stated rather than left to the plugin: OpenVINO's CPU plugin runs the float parts of a
model in BF16 by default on CPUs with AMX or AVX-512 BF16 (its ``INFERENCE_PRECISION_HINT``), the
way TensorRT may run FP32 in TF32; its GPU plugin in FP16. This backend compiles with the hint
``"f32"`` unless the caller passes ``inference_precision="bf16"`` (or ``"f16"``), so an FP32 artifact
is checked at FP32. ``options`` records the hint the compiled model reports, the device(s) it runs
on and its thread count; ``precision`` is the artifact's (the variant's), as for ONNX Runtime.

Threads: ``intra_op_threads`` (ONNX Runtime's option name) sets ``INFERENCE_NUM_THREADS``; default: the
plugin's (every core). ``infer`` is thread safe with one ``InferRequest`` per calling thread (created on
its first call, kept in a ``threading.local``): a compiled model may hand out requests to any thread
while a request itself is not re-entrant, and separate requests let OpenVINO's streams run calls side
by side where a lock would serialise them.

One ``openvino.Core`` per process (:func:`_core`), never released. OpenVINO's CPU plugin gives the
thread that first compiles for it an alternate signal stack (its AMX support) and unmaps it when the plugin
is destroyed, restoring the old one on whichever thread runs the destructor: a backend built on the main
thread and garbage-collected on another left the main thread's signal stack pointing at unmapped memory,
and the next Python signal handler on it (SIGCHLD under torch's DataLoader, SIGINT) killed the process
with SIGSEGV (seen in the test suite; reproduced in ``tests/ssd_runtime/test_openvino_backend.py``). A
plugin that lives as long as the process keeps that stack mapped.

``openvino`` is imported when a backend is created, never at module import.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ssd_runtime.backends import BackendClosedError, BackendError
from ssd_runtime.backends.onnx_file import OnnxFileBackend
from ssd_runtime.onnx_model import OnnxModelError, read_onnx_info

__all__ = ["INFERENCE_PRECISIONS", "INSTALL_HINT", "OpenVinoBackend", "OpenVinoDeviceError"]

INSTALL_HINT = "pip install 'ssd300-toolkit[openvino]'"
#: Accepted ``inference_precision`` hints, OpenVINO's element type names: f32 (the default here), bf16
#: (the CPU plugin's own default on CPUs with AMX or AVX-512 BF16), f16 (the GPU plugin's).
INFERENCE_PRECISIONS = ("f32", "bf16", "f16")
#: Virtual devices that choose among the physical ones (``AUTO:GPU,CPU`` lists its candidates).
_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO")


class OpenVinoDeviceError(BackendError):
    """The OpenVINO device asked for is not present (the message names the ones that are)."""


class OpenVinoBackend(OnnxFileBackend):
    """One compiled OpenVINO model over a toolkit ONNX export (see the module docstring).

    Attributes: the :class:`~ssd_runtime.backends.Backend` members - spec (from the file), path, variant,
    precision (the variant's), input_kind, output_kind, end2end (these six, and the batch check, from
    :class:`~ssd_runtime.backends.onnx_file.OnnxFileBackend`, as for ONNX Runtime), device ("cpu":
    outputs on the host), options (variant, openvino_device, execution_devices, inference_precision,
    intra_op_threads, openvino: its version).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = "cpu",
        openvino_device: str = "CPU",
        inference_precision: str = "f32",
        intra_op_threads: int | None = None,
    ) -> None:
        path = Path(path)
        info = read_onnx_info(path)  # external data checked before anything is loaded
        if str(device) != "cpu":
            raise OpenVinoDeviceError(
                f"device {device!r}: OpenVINO leaves its outputs on the host, so device must be 'cpu'; name the "
                "Intel device that computes with openvino_device ('CPU', 'GPU', 'AUTO'; --openvino-device)"
            )
        if inference_precision not in INFERENCE_PRECISIONS:
            raise ValueError(f"inference_precision must be one of {', '.join(INFERENCE_PRECISIONS)}, "
                             f"got {inference_precision!r}")
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendError(f"running {path} with OpenVINO needs the openvino package: {INSTALL_HINT}") from exc
        self.path = path
        self.info = info
        self.device = "cpu"
        core = _core(ov)
        _check_present(openvino_device, core.available_devices)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": inference_precision}
        if intra_op_threads:
            config["INFERENCE_NUM_THREADS"] = int(intra_op_threads)
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, openvino_device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types
            raise OnnxModelError(f"OpenVINO {ov.__version__} cannot compile {path} for {openvino_device}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        self._outputs = _ports_by_name(model.outputs, self.compiled.outputs, self.record.output_names, path)
        batch = model.inputs[0].get_partial_shape()[0]
        self.batch_dim: int | str = batch.get_length() if batch.is_static else "N"  # int (static) or dynamic
        self._options = {
            "variant": self.variant,
            "openvino_device": openvino_device,
            "execution_devices": list(_property(self.compiled, "EXECUTION_DEVICES", [openvino_device])),
            "inference_precision": _type_name(_property(self.compiled, "INFERENCE_PRECISION_HINT", inference_precision)),
            "intra_op_threads": int(_property(self.compiled, "INFERENCE_NUM_THREADS", intra_op_threads or 0)),
            "openvino": ov.__version__,
        }
        self._local = threading.local()
        self._closed = False

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu", **options: Any) -> OpenVinoBackend:
        return cls(path, device=device, **options)

    @property
    def options(self) -> dict[str, Any]:
        """The run options a report records: the variant, the OpenVINO device asked for and the device(s)
        running, the inference precision hint in force, the thread count and the OpenVINO version."""
        return dict(self._options)

    def close(self) -> None:
        """Drop the compiled model and this backend's infer requests; ``infer`` refuses afterwards."""
        self._closed = True
        self.compiled = None
        self._local = threading.local()  # the old one, and every thread's request with it, is released

    def infer(self, batch: Any) -> tuple[Any, ...]:
        """(N, ...) batch -> (locs (N, P, 4), class_logits (N, P, C)) float32 NumPy arrays on the host.

        end2end: (boxes (N, K, 4) float32, scores (N, K) float32, labels (N, K) int64, num_detections (N,) int64).
        """
        if self._closed:
            raise BackendClosedError(f"{self.path}: this backend was closed; load the model again")
        if not isinstance(batch, np.ndarray):
            batch = batch.detach().cpu().numpy()  # a torch tensor
        self.check_batch(batch.shape, batch.dtype)
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        # share_inputs: the call is synchronous and the caller keeps the array; outputs are copied
        # (share_outputs=False), since this thread's next call reuses the request's buffers
        results = request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True, share_outputs=False)
        outputs = [results[port] for port in self._outputs]
        if self.output_kind == "detections":
            boxes, scores, labels, count = outputs
            return (boxes.astype(np.float32, copy=False), scores.astype(np.float32, copy=False),
                    labels.astype(np.int64, copy=False), count.astype(np.int64, copy=False))
        return tuple(out.astype(np.float32, copy=False) for out in outputs)


_CORE: Any = None
_CORE_LOCK = threading.Lock()


def _core(ov: Any) -> Any:
    """The process's one ``openvino.Core`` (made on first use, kept: see the module docstring)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = ov.Core()
        return _CORE


def _ports_by_name(graph: list, ports: list, names: tuple[str, ...], path: Path) -> list:
    """The compiled outputs in the order of ``names``: each by its declared name, else by position.

    ``graph``: the outputs of the model as read, which must carry ``names`` in that order (ONNX Runtime's
    check); ``ports``: the compiled model's, in the same order, some of which may answer to other names.
    """
    read = [sorted(port.get_names()) for port in graph]
    if len(read) != len(names) or any(name not in found for name, found in zip(names, read)):
        raise OnnxModelError(f"{path}: expected outputs {', '.join(names)}; the graph has {read}")
    found = []
    for position, name in enumerate(names):
        matches = [port for port in ports if name in port.get_names()]
        found.append(matches[0] if matches else ports[position])
    return found


def _check_present(device: str, available: list[str]) -> None:
    """Raise :class:`OpenVinoDeviceError` unless ``device`` (or every candidate of AUTO:...) is present.

    ``GPU`` is present when a ``GPU`` or ``GPU.N`` is listed; a bare virtual device (``AUTO``) picks
    among what is present, so it needs nothing more.
    """
    kind, _, candidates = device.partition(":")
    if kind in _VIRTUAL_DEVICES:
        wanted = [c for c in candidates.split(",") if c]
    else:
        wanted = [device]
    missing = [w for w in wanted if not any(a == w or a.startswith(w + ".") or w == a + ".0" for a in available)]
    if missing:
        raise OpenVinoDeviceError(
            f"OpenVINO device {device!r} is not present ({', '.join(missing)} missing); this machine has "
            f"{', '.join(available) or 'none'} (openvino.Core().available_devices); pass openvino_device= one "
            "of those or 'AUTO' (an Intel GPU needs its driver: OpenVINO's GPU plugin configuration guide)"
        )


def _property(compiled: Any, name: str, default: Any) -> Any:
    """A compiled model's property, or ``default`` where the device does not report it (AUTO may not)."""
    try:
        return compiled.get_property(name)
    except Exception:  # OpenVINO raises RuntimeError for a property the plugin lacks
        return default


def _type_name(value: Any) -> str:
    """OpenVINO's element type (``Type.f32``) as its short name, ``"f32"``; a string as it is."""
    return value if isinstance(value, str) else value.get_type_name()
