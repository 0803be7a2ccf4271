"""The PyTorch-checkpoint backend of the runtime (``.pt`` / ``.pth``), on the CPU or a CUDA GPU.

Found by the runtime through its registry (``ssd_runtime.backends.BACKENDS["torch"]``) by name, so
``ssd_runtime`` never imports ``ssd_train``. Same interface as every backend
(:class:`ssd_runtime.backends.Backend`): ``spec``, ``path``, ``input_kind`` ("float32-nchw"),
``output_kind`` ("raw"), ``end2end`` (None), ``device``, ``variant`` (None: a checkpoint is no exported
variant), ``precision`` ("fp16" with ``fp16``, else "fp32"), ``options``, ``close()``, and
``infer(batch) -> (locs, class_logits)`` as float32 torch tensors on ``device`` (no host copy: the
runtime's GPU postprocess works on them in place).

Options (the fast path for GPUs without TensorRT):

- ``fp16``: FP16 weights and activations with the conv4_3 L2 norm in FP32 (:class:`FP16Network`).
- ``channels_last``: NHWC memory format (default on CUDA: faster convolutions with tensor cores).
- ``cuda_graph``: on CUDA, capture the network once per batch size into a CUDA graph with a static
  input buffer; each call copies the batch in and replays. Replays share buffers, so they run under a
  lock (plain inference needs none). :meth:`capture` also captures network + the static-shape
  postprocess (:func:`ssd_runtime.postprocess_torch.postprocess_torch_padded`) in one graph.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssd_runtime.backends import BackendClosedError
from ssd_runtime.preprocess import InputError
from ssd_runtime.spec import PostprocessSettings
from ssd_train.checkpoint import load_model
from ssd_train.model import FP16Network

__all__ = ["CapturedGraph", "TorchCheckpointBackend"]


@dataclass
class CapturedGraph:
    """A CUDA graph of the network (and optionally the padded postprocess) for one batch size.

    input: the static float32 (N, 3, S, S) buffer (channels_last if the backend is); outputs: the
    tensors the graph writes ((locs, class_logits), or a PaddedDetections when captured with settings).
    """

    graph: Any
    input: torch.Tensor
    outputs: Any

    def run(self, batch: torch.Tensor) -> Any:
        """Copy ``batch`` (same shape, on the device) into the static input and replay (asynchronous)."""
        self.input.copy_(batch, non_blocking=True)
        self.graph.replay()
        return self.outputs


class TorchCheckpointBackend:
    """A toolkit checkpoint served by PyTorch (see the module docstring)."""

    input_kind = "float32-nchw"
    output_kind = "raw"
    end2end = None
    variant = None

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = "cpu",
        fp16: bool = False,
        channels_last: bool | None = None,
        cuda_graph: bool = False,
    ) -> None:
        self.path = Path(path)
        torch_device = torch.device(device)
        if torch_device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device; use device='cpu'")
            if torch_device.index is None:
                torch_device = torch.device("cuda", torch.cuda.current_device())
        elif torch_device.type != "cpu":
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if cuda_graph and torch_device.type != "cuda":
            raise ValueError("cuda_graph=True needs a CUDA device")
        model, spec = load_model(self.path)
        model.fold_norms()
        self.spec = spec
        self.device = str(torch_device)
        self.fp16 = bool(fp16)
        self.channels_last = torch_device.type == "cuda" if channels_last is None else bool(channels_last)
        self.cuda_graph = bool(cuda_graph)
        network = FP16Network(model) if self.fp16 else model
        network = network.to(torch_device).eval()
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        self.model = network
        self._torch_device = torch_device
        self.priors = torch.from_numpy(np.array(spec.make_priors(), dtype=np.float32)).to(torch_device)
        self._lock = threading.Lock()
        self._graphs: dict[tuple, CapturedGraph] = {}
        self._closed = False
        if torch_device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu", **options: Any) -> TorchCheckpointBackend:
        return cls(path, device=device, **options)

    @property
    def precision(self) -> str:
        """What the network computes in: "fp16" (:class:`FP16Network`) or "fp32"."""
        return "fp16" if self.fp16 else "fp32"

    @property
    def options(self) -> dict[str, Any]:
        """The run options a benchmark report records."""
        return {"fp16": self.fp16, "channels_last": self.channels_last, "cuda_graph": self.cuda_graph}

    def close(self) -> None:
        """Drop the captured CUDA graphs and the network (their device memory goes with them); ``infer``
        and :meth:`capture` refuse afterwards."""
        with self._lock:
            self._closed = True
            self._graphs.clear()
            self.model = None

    def _check(self, batch: torch.Tensor) -> None:
        size = self.spec.input_size
        if batch.dim() != 4 or tuple(batch.shape[1:]) != (3, size, size) or batch.dtype != torch.float32:
            raise InputError(
                f"{self.path} expects float32 (N, 3, {size}, {size}) (float32-nchw, normalized); received "
                f"{str(batch.dtype).replace('torch.', '')} {tuple(batch.shape)}"
            )

    def _prepare(self, batch: Any) -> torch.Tensor:
        if self._closed:
            raise BackendClosedError(f"{self.path}: this backend was closed; load the checkpoint again")
        batch = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
        self._check(batch)
        batch = batch.to(self._torch_device, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def infer(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (N, 3, S, S) (NumPy or torch) -> (locs (N, P, 4), class_logits (N, P, C)) float32 on device."""
        batch = self._prepare(batch)
        if self.cuda_graph:
            with self._lock:
                runner = self._graph_for(batch.shape[0], None)
                locs, logits = runner.run(batch)
                return locs.clone(), logits.clone()
        with torch.no_grad():
            locs, logits = self.model(batch)
        return locs.float(), logits.float()

    def _graph_for(self, batch_size: int, settings: PostprocessSettings | None, **postprocess: Any) -> CapturedGraph:
        key = (batch_size, settings, tuple(sorted(postprocess.items())))
        if key not in self._graphs:
            self._graphs[key] = self._capture(batch_size, settings, **postprocess)
        return self._graphs[key]

    def capture(
        self,
        batch_size: int,
        settings: PostprocessSettings | None = None,
        *,
        max_candidates: int = 200,
        nms_iterations: int = 8,
    ) -> CapturedGraph:
        """A CUDA graph for ``batch_size``: the network, plus the padded postprocess when ``settings`` given.

        With settings the graph outputs :class:`~ssd_runtime.postprocess_torch.PaddedDetections`
        (``max_candidates`` per class, ``nms_iterations`` fixed-point steps, ``exact`` flags). Cached.
        """
        if self._torch_device.type != "cuda":
            raise ValueError("CUDA graph capture needs a CUDA device")
        if self._closed:
            raise BackendClosedError(f"{self.path}: this backend was closed; load the checkpoint again")
        with self._lock:
            if settings is None:
                return self._graph_for(batch_size, None)
            return self._graph_for(batch_size, settings, max_candidates=max_candidates, nms_iterations=nms_iterations)

    def _capture(self, batch_size: int, settings: PostprocessSettings | None, **postprocess: Any) -> CapturedGraph:
        from ssd_runtime.postprocess_torch import postprocess_torch_padded

        size = self.spec.input_size
        static = torch.zeros((batch_size, 3, size, size), device=self._torch_device)
        if self.channels_last:
            static = static.contiguous(memory_format=torch.channels_last)

        def step() -> Any:
            locs, logits = self.model(static)
            if settings is None:
                return locs.float(), logits.float()
            return postprocess_torch_padded(locs, logits, self.priors, settings, self.spec.variances, **postprocess)

        with torch.no_grad():
            side = torch.cuda.Stream(self._torch_device)
            side.wait_stream(torch.cuda.current_stream(self._torch_device))
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up: cuDNN autotuning and allocations outside the graph
                    step()
            torch.cuda.current_stream(self._torch_device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = step()
        return CapturedGraph(graph, static, outputs)
