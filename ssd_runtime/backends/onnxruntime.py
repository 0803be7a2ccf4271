"""ONNX Runtime backend for toolkit ONNX exports (``.onnx``): CPU provider, or CUDA with I/O binding.

Loading: :func:`ssd_runtime.onnx_model.read_onnx_info` first (which refuses external data that could
escape the model folder, before any loader touches the file), then the spec and variant from the
``metadata_props``; the input dtype and layout come from the model itself (``fp32``/``fp16``: float32
(N, 3, S, S); ``uint8-nhwc``: uint8 (N, S, S, 3)). The ``end2end`` variant (NMS inside the graph) has
``output_kind = "detections"``: ``infer`` returns its four padded outputs (boxes, scores, labels,
num_detections; :mod:`ssd_runtime.end2end`) and ``end2end`` holds the settings baked into it.

``onnxruntime`` is imported when a backend is created, never at module import. ``InferenceSession.run``
is thread safe, so one backend serves several threads.

CUDA (``device="cuda"`` / ``"cuda:1"``) needs ``onnxruntime-gpu`` and torch: ``infer`` takes a torch
tensor on that device, binds it with ``io_binding().bind_input(..., buffer_ptr=tensor.data_ptr())``,
binds torch-allocated output tensors on the device, runs ``run_with_iobinding`` and returns the torch
outputs - no host copy. Written against the ONNX Runtime I/O binding documentation; it cannot run on
any machine of this project (onnxruntime-gpu is not installed anywhere here): untested.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ssd_runtime.backends import BackendClosedError
from ssd_runtime.backends.onnx_file import OnnxFileBackend
from ssd_runtime.onnx_model import OnnxModelError, read_onnx_info
from ssd_runtime.variants import DETECTION_OUTPUTS

__all__ = ["OrtBackend"]

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


class OrtBackend(OnnxFileBackend):
    """One ``onnxruntime.InferenceSession`` over a toolkit ONNX export (see the module docstring).

    Attributes: the :class:`~ssd_runtime.backends.Backend` members - spec (from the file), path, variant,
    precision (the variant's), input_kind, output_kind ("raw" | "detections"), end2end (the baked
    :class:`~ssd_runtime.onnx_model.End2EndConfig` of an end2end model, else None; these six from
    :class:`~ssd_runtime.backends.onnx_file.OnnxFileBackend`), device, options - and providers (as the
    session reports).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = "cpu",
        intra_op_threads: int | None = None,
        providers: list | None = None,
    ) -> None:
        path = Path(path)
        info = read_onnx_info(path)  # external data checked before anything is loaded
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise OnnxModelError(f"running {path} needs onnxruntime: pip install 'ssd300-toolkit[ort]'") from exc
        self.path = path
        self.info = info
        self.device = _normalize_device(device)
        if self.output_kind == "detections" and self.device != "cpu":
            raise OnnxModelError(f"{path}: the end2end variant runs in ONNX Runtime on the CPU only (device='cpu'); "
                                 "on a GPU, build a TensorRT engine from it (ssd-export engine)")
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        if providers is None:
            if self.device == "cpu":
                providers = ["CPUExecutionProvider"]
            else:
                if "CUDAExecutionProvider" not in ort.get_available_providers():
                    raise OnnxModelError(
                        f"device {device!r} needs ONNX Runtime's CUDAExecutionProvider, which this onnxruntime "
                        f"({ort.__version__}) lacks: install onnxruntime-gpu instead of onnxruntime, or use "
                        "device='cpu' (or the PyTorch/TensorRT backends on a GPU)"
                    )
                providers = [("CUDAExecutionProvider", {"device_id": self._device_id}), "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            raise OnnxModelError(f"ONNX Runtime cannot load {path}: {type(exc).__name__}: {exc}") from exc
        self.providers = self.session.get_providers()
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.input_dtype = _ORT_DTYPES.get(graph_input.type)
        if self.input_dtype is None:
            raise OnnxModelError(f"{path}: unsupported graph input type {graph_input.type}")
        self.output_names = [o.name for o in self.session.get_outputs()]
        expected = list(self.record.output_names)
        if self.output_names[: len(expected)] != expected:
            raise OnnxModelError(f"{path}: expected outputs {', '.join(expected)}; the graph has {self.output_names}")
        self.batch_dim = graph_input.shape[0]  # int (static) or a name (dynamic)
        self._closed = False

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu", **options: Any) -> OrtBackend:
        return cls(path, device=device, **options)

    @property
    def options(self) -> dict[str, Any]:
        """The run options a benchmark report records: the variant."""
        return {"variant": self.variant}

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees its memory with it); ``infer`` refuses afterwards."""
        self._closed = True
        self.session = None

    @property
    def _device_id(self) -> int:
        return int(self.device.partition(":")[2] or 0)

    def infer(self, batch: Any) -> tuple[Any, ...]:
        """(N, ...) batch -> (locs (N, P, 4), class_logits (N, P, C)) float32: NumPy on the CPU, torch on CUDA.

        end2end: NumPy (boxes (N, K, 4), scores (N, K), labels (N, K) int64, num_detections (N,) int64).
        """
        if self._closed:
            raise BackendClosedError(f"{self.path}: this backend was closed; load the model again")
        if self.device != "cpu":
            return self._infer_cuda(batch)
        if not isinstance(batch, np.ndarray):
            batch = batch.detach().cpu().numpy()  # a torch tensor
        self.check_batch(batch.shape, batch.dtype)
        feed = batch if batch.dtype == self.input_dtype else batch.astype(self.input_dtype)
        if self.output_kind == "detections":
            return tuple(self.session.run(list(DETECTION_OUTPUTS), {self.input_name: feed}))
        locs, class_logits = self.session.run(self.output_names[:2], {self.input_name: feed})
        return locs.astype(np.float32, copy=False), class_logits.astype(np.float32, copy=False)

    def _infer_cuda(self, batch: Any) -> tuple[Any, Any]:  # pragma: no cover - needs onnxruntime-gpu
        """I/O binding: torch device tensors in and out (per the ONNX Runtime I/O binding docs). Untested."""
        import torch

        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        received = {torch.float32: np.float32, torch.float16: np.float16, torch.uint8: np.uint8}.get(batch.dtype, np.float64)
        self.check_batch(tuple(batch.shape), received)
        device = torch.device(self.device)
        torch_dtype = {np.float32: torch.float32, np.float16: torch.float16, np.uint8: torch.uint8}[self.input_dtype]
        batch = batch.to(device=device, dtype=torch_dtype).contiguous()
        n = batch.shape[0]
        locs = torch.empty((n, self.spec.num_priors, 4), dtype=torch.float32, device=device)
        logits = torch.empty((n, self.spec.num_priors, self.spec.num_classes), dtype=torch.float32, device=device)
        # ORT runs on its own CUDA stream: make the input visible to it first
        torch.cuda.current_stream(device).synchronize()
        binding = self.session.io_binding()  # one binding per call: bindings are not shared across threads
        binding.bind_input(
            name=self.input_name, device_type="cuda", device_id=self._device_id, element_type=self.input_dtype,
            shape=tuple(batch.shape), buffer_ptr=batch.data_ptr(),
        )
        for name, out in (("locs", locs), ("class_logits", logits)):
            binding.bind_output(
                name=name, device_type="cuda", device_id=self._device_id, element_type=np.float32,
                shape=tuple(out.shape), buffer_ptr=out.data_ptr(),
            )
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return locs, logits


def _normalize_device(device: str) -> str:
    device = str(device)
    if device == "cpu" or device == "cuda" or device.startswith("cuda:"):
        return "cuda:0" if device == "cuda" else device
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
