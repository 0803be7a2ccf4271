"""PyTorch evaluation: the VOC mAP of a model on a VOC-format split (during training and ``ssd-train eval``).

A model in memory is a backend like any other (:class:`ModelBackend`), so it is evaluated by the
runtime's one path (:mod:`ssd_runtime.evaluate`): the streaming loop over the fixed batch grid, the
ground truth in fractions of the decoded image, the one metric. The postprocess is the runtime's
NumPy one on the CPU and its torch one on a GPU (identical detections, tested).

Large splits can be sharded over processes (``--shard i/N`` or torchrun) and written to a resumable
detections file, the runtime's format (:mod:`ssd_runtime.detections_file`): :func:`evaluate_to_file`
runs :func:`ssd_runtime.streaming.detect_to_file` (header, grid, writer, the wait for the other
ranks) and merges the parts with :func:`ssd_runtime.evaluate.map_of_detections_files`; so the merged
mAP is the single-process mAP, and ``ssd-runtime eval --detections`` reads the same files.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssd_runtime.backends import BackendClosedError
from ssd_runtime.detector import Detector
from ssd_runtime.detections_file import ImageRecord
from ssd_runtime.evaluate import (
    detections_of_records, image_items, map_of_detections_files, map_of_image_records,
)  # fmt: skip
from ssd_runtime.metric import VOCResult
from ssd_runtime.sharding import Shard, part_paths
from ssd_runtime.streaming import detect_to_file
from ssd_runtime.spec import ModelSpec
from ssd_train.config import TrainConfig
from ssd_train.data import VOCDetection
from ssd_train.model import SSD300

__all__ = ["ModelBackend", "eval_dataset", "evaluate", "evaluate_to_file"]

#: What the detections header names as the backend of a file this module writes.
BACKEND_NAME = "ssd_train.evaluation"


class ModelBackend:
    """An :class:`SSD300` in memory served as a runtime backend (:class:`ssd_runtime.backends.Backend`).

    The network runs as it is, in float32 with its BatchNorms (the checkpoint backend,
    :class:`ssd_train.backend.TorchCheckpointBackend`, folds them into the convolutions, which moves
    the last bits): what training evaluates is the model it trains. ``infer``: float32 (N, 3, S, S)
    normalized, NumPy or torch -> (locs (N, P, 4), class_logits (N, P, C)) float32 tensors on ``device``.
    The caller puts the model on ``device`` and in eval mode.
    """

    input_kind = "float32-nchw"
    output_kind = "raw"
    end2end = None
    variant = None
    precision = "fp32"

    def __init__(
        self, model: SSD300, spec: ModelSpec, device: torch.device | str = "cpu", *, channels_last: bool = False,
        path: str | os.PathLike | None = None,
    ) -> None:
        self.model: SSD300 | None = model
        self.spec = spec
        self.path = None if path is None else Path(path)
        self._torch_device = torch.device(device)
        self.device = str(self._torch_device)
        self.channels_last = bool(channels_last)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu", channels_last: bool = False) -> ModelBackend:
        """A checkpoint's model as it was saved (norms not folded), on ``device``, in eval mode."""
        from ssd_train.checkpoint import load_model

        model, spec = load_model(path)
        return cls(model.to(device).eval(), spec, device, channels_last=channels_last, path=path)

    @property
    def options(self) -> dict[str, Any]:
        return {"channels_last": self.channels_last}

    @torch.no_grad()
    def infer(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.model is None:
            raise BackendClosedError("this model backend was closed; make a new one around the model")
        images = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
        images = images.to(self._torch_device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        locs, class_logits = self.model(images)
        return locs.float(), class_logits.float()

    def close(self) -> None:
        """Let go of the model (the caller's object is untouched); ``infer`` refuses afterwards."""
        self.model = None


def _postprocess_for(device: torch.device) -> str:
    """The NumPy postprocess on the CPU (much faster there), the torch one on a GPU: identical detections."""
    return "numpy" if device.type == "cpu" else "torch"


@contextmanager
def _detector(model: SSD300, spec: ModelSpec, device: torch.device, channels_last: bool) -> Iterator[Detector]:
    """A runtime :class:`Detector` over ``model`` in eval mode; the model's training mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield Detector(ModelBackend(model, spec, device, channels_last=channels_last),
                       postprocess=_postprocess_for(device))
    finally:
        model.train(was_training)


def evaluate(
    model: SSD300,
    dataset: VOCDetection,
    spec: ModelSpec,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    *,
    ap_method: str = "11point",
    channels_last: bool = False,
    detections: list[ImageRecord] | None = None,
) -> VOCResult:
    """VOC mAP of ``model`` on the images of ``dataset`` (its records) at the spec's evaluation settings.

    :func:`ssd_runtime.evaluate.map_of_detector_on_records`'s steps with the model as the backend.
    ``detections``: a list the scored detections are added to (one record per image, in pixels of the
    decoded image), for other metrics of the same detections (COCO's: :func:`ssd_runtime.coco_metric.coco_section`).
    """
    with _detector(model, spec, torch.device(device), channels_last) as detector:
        images, _ = detections_of_records(detector, dataset.records, batch_size)
    if detections is not None:
        detections.extend(images)
    return map_of_image_records(dataset.records, images, spec.class_names, ap_method=ap_method)


def evaluate_to_file(
    model: SSD300,
    dataset: VOCDetection,
    spec: ModelSpec,
    out: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    ap_method: str = "11point",
    shard: Shard = Shard(),
    resume: bool = False,
    channels_last: bool = False,
    source: dict[str, Any] | None = None,
) -> VOCResult | None:
    """:func:`evaluate` of ``shard``'s share of ``dataset``, written to its part of ``out``; then the mAP of all parts.

    ``checkpoint``: the model's file (its sha256 names the run in the header). The mAP comes from the
    single process, or under torchrun from rank 0 once every rank has written its part; a shard given
    by ``--shard i/N`` returns None (merge the parts with ``ssd-runtime eval --detections``). ``resume``
    skips the images already in the part.
    """
    device = torch.device(device)
    records = dataset.records
    facts = {"backend": BACKEND_NAME, "device": str(device), "postprocess": _postprocess_for(device)}
    with _detector(model, spec, device, channels_last) as detector:
        detect_to_file(detector, checkpoint, image_items(records), out, spec.evaluation, precision="fp32",
                       batch_size=batch_size, shard=shard, resume=resume, source={**facts, **(source or {})})
    if not shard.merges:
        return None
    return map_of_detections_files(part_paths(out, shard.count), records, ap_method=ap_method)[1]


def eval_dataset(config: TrainConfig, class_names: tuple[str, ...], spec: ModelSpec) -> VOCDetection:
    """The test split of ``config.data`` that periodic evaluation reads (the first ``eval_images`` images)."""
    test_set = VOCDetection.from_voc(config.data, "test", class_names=class_names, train=False,
                                     skip_unknown=config.skip_unknown_classes, mean=spec.mean, std=spec.std, size=spec.input_size)
    if config.eval_images and config.eval_images < len(test_set):
        test_set.records = test_set.records[: config.eval_images]
    return test_set
