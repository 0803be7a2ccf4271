"""The runtime detector: a model file in, detections in image pixels out.

::

    from ssd_runtime import Detector
    detector = Detector.load("ssd300.onnx")             # or a .pt checkpoint, device="cuda", postprocess="torch"
    result = detector.detect("street.jpg")              # one image -> ImageDetections
    results = detector.detect([img_a, img_b], min_score=0.5)   # a batch -> list[ImageDetections]

Everything the detector needs (class names, priors, input size, mean/std, postprocess defaults)
comes from the model file's spec. The pipeline is :func:`ssd_runtime.preprocess.preprocess` ->
``backend.infer`` -> postprocess (NumPy, or torch on the backend's device, the CPU included, with
``postprocess="torch"``: the raw outputs are never copied to the host, only the final detections) ->
boxes scaled to the pixels of each input image.

End-to-end models (``backend.output_kind == "detections"``: an ``end2end`` ONNX model, or a TensorRT
engine built from one) do decode and NMS themselves; the detector skips its postprocess and reads
their padded detections at the requested settings (:mod:`ssd_runtime.end2end`: a higher min_score
and a lower top_k than baked in are applied exactly, anything else is an error).

Thread safety: ``detect`` keeps no per-call state on the detector; backends' ``infer`` is thread
safe (ONNX Runtime sessions are; PyTorch inference under no_grad is; its CUDA-graph replays take a
lock; a TensorRT engine gives each thread its own execution context, stream and buffers).
"""
from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssd_runtime.backends import Backend, backend_class, resolve_backend, to_numpy
from ssd_runtime.detections import Detections, ImageDetections
from ssd_runtime.end2end import check_settings, end2end_detections
from ssd_runtime.postprocess import postprocess
from ssd_runtime.preprocess import ImageInput, PreparedBatch, as_image_list, preprocess
from ssd_runtime.spec import ModelSpec, PostprocessSettings
from ssd_runtime.variants import OUTPUT_KINDS

__all__ = ["POSTPROCESSES", "POSTPROCESS_ALIASES", "Detector", "ImageDetections", "resolve_postprocess"]

#: "numpy": on the host, no torch; "torch": the torch postprocess on the backend's device tensors
#: (a CUDA GPU for GPU backends; CPU tensors for a CPU backend).
POSTPROCESSES = ("numpy", "torch")
#: Older names still accepted: "gpu" was the torch postprocess's name before it also meant the CPU.
POSTPROCESS_ALIASES = {"gpu": "torch"}


def resolve_postprocess(name: str) -> str:
    """A postprocess name or alias -> its name in :data:`POSTPROCESSES`; anything else is a ValueError."""
    name = POSTPROCESS_ALIASES.get(name, name)
    if name not in POSTPROCESSES:
        raise ValueError(
            f"postprocess must be one of {POSTPROCESSES} (or an alias in {sorted(POSTPROCESS_ALIASES)}), got {name!r}"
        )
    return name


class Detector:
    """SSD300 detection through a backend (ONNX Runtime, PyTorch checkpoint, TensorRT).

    Use :meth:`load`. Attributes: ``backend`` (its ``spec``, ``input_kind``, ``device``), ``spec``,
    ``postprocess`` ("numpy" | "torch"; the alias "gpu" is stored as "torch"), ``settings`` (defaults:
    the spec's detection settings; an end-to-end model's baked ones), ``output_kind`` ("raw" |
    "detections": an end-to-end model).
    """

    def __init__(self, backend: Backend, *, postprocess: str = "numpy") -> None:
        postprocess = resolve_postprocess(postprocess)
        self.backend = backend
        self.spec: ModelSpec = backend.spec
        self.postprocess = postprocess
        self.output_kind: str = backend.output_kind
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"{type(backend).__name__}: output_kind must be one of {OUTPUT_KINDS}, got {self.output_kind!r}")
        # an end-to-end model's own settings are the ones it can always give
        self.settings = backend.end2end.settings if self.output_kind == "detections" else self.spec.detection
        self.priors = self.spec.make_priors()  # (P, 4) fractional cxcywh, hash-checked
        self._device_priors: Any = None
        self._priors_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        backend: str = "auto",
        *,
        device: str = "cpu",
        postprocess: str = "numpy",
        **options: Any,
    ) -> Detector:
        """Load a model file; the backend comes from its kind (``.onnx``, ``.pt``/``.pth``, ``.engine``/``.plan``).

        options go to the backend (PyTorch: ``fp16``, ``channels_last``, ``cuda_graph``; ONNX Runtime:
        ``intra_op_threads``; OpenVINO (``backend="openvino"``): ``openvino_device``, ``inference_precision``,
        ``intra_op_threads``; TensorRT: ``cuda_graph``, ``trust_plan`` and ``spec``).
        """
        postprocess = resolve_postprocess(postprocess)  # before loading: a bad name fails fast
        if not os.path.exists(path):
            raise FileNotFoundError(f"model not found: {path}")
        name = resolve_backend(path, backend)
        return cls(backend_class(name).load(path, device=device, **options), postprocess=postprocess)

    def settings_with(
        self, min_score: float | None = None, max_overlap: float | None = None, top_k: int | None = None,
        base: PostprocessSettings | None = None,
    ) -> PostprocessSettings:
        """``base`` (default: the detection settings) with the given values replaced."""
        base = base or self.settings
        return PostprocessSettings(
            base.min_score if min_score is None else float(min_score),
            base.max_overlap if max_overlap is None else float(max_overlap),
            base.top_k if top_k is None else int(top_k),
        )

    def prepare(self, images: Sequence[ImageInput]) -> PreparedBatch:
        """Single images -> the backend's input batch and the images' sizes."""
        return preprocess(images, self.spec, self.backend.input_kind)

    def fractional_detections(self, pixels: Any, settings: PostprocessSettings) -> list[Detections]:
        """A preprocessed batch (:meth:`prepare`'s pixels) -> fractional :class:`Detections` per image
        (inference + postprocess at ``settings``; boxes xyxy in fractions of the image)."""
        if self.output_kind == "detections":
            check_settings(self.backend.end2end.settings, settings)  # before the inference, not after
        return self.outputs_to_detections(self.infer(pixels), settings)

    def raw_detections(self, pixels: Any, settings: PostprocessSettings) -> list[Detections]:
        """Deprecated (goes in the next release): :meth:`fractional_detections`, whose name says what it returns."""
        warnings.warn("Detector.raw_detections is deprecated: use Detector.fractional_detections (the same "
                      "postprocessed detections)", DeprecationWarning, stacklevel=2)
        return self.fractional_detections(pixels, settings)

    def infer(self, pixels: Any) -> tuple:
        """``backend.infer``; with the torch postprocess on a CUDA backend a NumPy batch goes to the device
        first, as a torch tensor, so that every backend leaves its outputs there (a TensorRT engine hands
        back NumPy for NumPy and device tensors for device tensors)."""
        device = str(self.backend.device)
        if self.postprocess == "torch" and device.startswith("cuda") and isinstance(pixels, np.ndarray):
            import torch

            pixels = torch.from_numpy(pixels).to(device)
        return self.backend.infer(pixels)

    def outputs_to_detections(self, outputs: tuple, settings: PostprocessSettings) -> list[Detections]:
        """The backend's outputs -> fractional :class:`Detections` per image: raw ones postprocessed, an
        end-to-end model's padded detections read at ``settings``."""
        if self.output_kind == "detections":
            return end2end_detections(outputs, self.backend.end2end.settings, settings)
        locs, class_logits = outputs
        return self.postprocess_outputs(locs, class_logits, settings)

    def postprocess_outputs(self, locs: Any, class_logits: Any, settings: PostprocessSettings) -> list[Detections]:
        """Raw outputs (host arrays or device tensors) -> fractional :class:`Detections` per image."""
        if self.postprocess == "numpy":
            return postprocess(to_numpy(locs), to_numpy(class_logits), self.priors, settings, self.spec.variances)
        import torch

        from ssd_runtime.postprocess_torch import postprocess_torch

        if isinstance(locs, np.ndarray):
            locs, class_logits = torch.from_numpy(locs), torch.from_numpy(class_logits)
        return postprocess_torch(locs, class_logits, self._priors_on(locs.device), settings, self.spec.variances)

    def _priors_on(self, device: Any) -> Any:
        import torch

        with self._priors_lock:
            if self._device_priors is None or self._device_priors.device != device:
                self._device_priors = torch.from_numpy(np.array(self.priors)).to(device)
            return self._device_priors

    def detect(
        self,
        images: ImageInput | Sequence[ImageInput],
        min_score: float | None = None,
        max_overlap: float | None = None,
        top_k: int | None = None,
    ) -> ImageDetections | list[ImageDetections]:
        """Detect objects in one image or a batch.

        images: a path, a PIL image, a uint8 (H, W, 3) RGB array (-> one :class:`ImageDetections`), or a
        list of those / a uint8 (N, H, W, 3) array (-> a list). Settings default to the spec's detection
        settings (min_score 0.2, max_overlap 0.5, top_k 200 for the reference); for an end-to-end model,
        to the settings baked into it.
        """
        image_list, batched = as_image_list(images)
        settings = self.settings_with(min_score, max_overlap, top_k)
        batch = self.prepare(image_list)
        results = [
            self.to_image_detections(dets, width, height)
            for dets, (width, height) in zip(self.fractional_detections(batch.pixels, settings), batch.sizes)
        ]
        return results if batched else results[0]

    def stream(
        self,
        source: Any,
        *,
        every: int = 1,
        max_frames: int | None = None,
        duration: float | None = None,
        batch_size: int = 1,
        min_score: float | None = None,
        max_overlap: float | None = None,
        top_k: int | None = None,
        sinks: Sequence[Any] = (),
        callback: Any = None,
        **source_options: Any,
    ) -> Any:
        """Detections on a video source, frame by frame: a :class:`ssd_runtime.video.Stream`, which yields
        one :class:`ssd_runtime.video.FrameResult` per processed frame (iterate it, or call its ``run``).

        source: a video file, an image-sequence pattern (``frames/%06d.png``), a camera (``/dev/video0``
        or an index), a network URL (``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``), a
        GStreamer pipeline or ``csi://N`` (Jetson), or an opened :class:`ssd_runtime.video.Source`.
        every: process every N-th frame; max_frames / duration (seconds): stop after that many processed
        frames / that much of the source; batch_size: frames per inference for a file (live sources run
        one at a time); sinks: :mod:`ssd_runtime.video.sinks` objects, ``callback(result)`` one more;
        source_options: :func:`ssd_runtime.video.open_source`'s (``live``, ``realtime``, ``reconnect``, ...).
        """
        from ssd_runtime.video import CallbackSink, Source, Stream, open_source

        opened = source if isinstance(source, Source) else open_source(source, **source_options)
        sinks = [*sinks, *([CallbackSink(callback)] if callback is not None else [])]
        return Stream(self, opened, settings=self.settings_with(min_score, max_overlap, top_k), batch_size=batch_size,
                      every=every, max_frames=max_frames, duration=duration, sinks=sinks)

    def to_image_detections(self, dets: Detections, width: int, height: int) -> ImageDetections:
        names = tuple(self.spec.class_names[int(label)] for label in dets.labels)
        return ImageDetections(
            dets.to_pixels(width, height).astype(np.float32), dets.labels.astype(np.int64), names,
            dets.scores.astype(np.float32), int(width), int(height),
        )

    def __repr__(self) -> str:
        return (f"Detector({type(self.backend).__name__}, device={self.backend.device!r}, "
                f"postprocess={self.postprocess!r}, classes={self.spec.num_classes})")
