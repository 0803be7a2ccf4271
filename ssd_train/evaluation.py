"""PyTorch evaluation: the VOC mAP of a model on a VOC-format split (during training and ``ssd-train eval``).

Large splits can be sharded over processes (``--shard i/N`` or torchrun) and written to a resumable
detections file, the runtime's format (:mod:`ssd_runtime.detections_file`): :func:`evaluate_to_file`.
Batches are the fixed grid of :func:`evaluate` (whole batches per shard, a batch with an image left to
do runs whole), and the merge is the runtime's (:func:`ssd_runtime.evaluate.parts_map`), whose ground
truth equals the dataset's bit for bit; so the merged mAP is the single-process mAP.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from ssd_runtime.detections import Detections
from ssd_runtime.metric import GroundTruth, VOCResult
from ssd_runtime.sharding import Shard
from ssd_runtime.spec import ModelSpec
from ssd_train.config import TrainConfig
from ssd_train.data import VOCDetection, collate
from ssd_train.model import SSD300


@torch.no_grad()
def _batches(
    model: SSD300, dataset: VOCDetection, spec: ModelSpec, device: torch.device, batches: Sequence[list[int]], *,
    channels_last: bool, workers: int,
) -> Iterator[tuple[list[int], list[Detections], list[GroundTruth]]]:
    """(indices, detections, ground truth) of each batch of dataset indices, at the spec's evaluation settings.

    The postprocess is the NumPy one on the CPU and the torch reference on a GPU (identical detections).
    """
    from ssd_runtime.postprocess import postprocess
    from ssd_runtime.postprocess_torch import postprocess_torch

    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate)
    priors = model.priors_cxcy.cpu().numpy()
    for indices, (images, boxes, labels, difficult) in zip(batches, loader):
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        locs, logits = model(images)
        if device.type == "cpu":  # the NumPy implementation: identical detections (tested), much faster on a CPU
            detections = postprocess(locs.float().numpy(), logits.float().numpy(), priors, spec.evaluation,
                                     spec.variances)
        else:
            detections = postprocess_torch(locs.float(), logits.float(), model.priors_cxcy, spec.evaluation,
                                           spec.variances)
        truths = [GroundTruth.create(b.numpy(), lab.numpy(), d.numpy()) for b, lab, d in zip(boxes, labels, difficult)]
        yield indices, detections, truths


def _grid(indices: range, batch_size: int) -> list[list[int]]:
    """``indices`` (starting on a batch boundary) cut into batches of ``batch_size``."""
    return [list(range(first, min(first + batch_size, indices.stop))) for first in range(indices.start, indices.stop, batch_size)]


def evaluate(
    model: SSD300,
    dataset: VOCDetection,
    spec: ModelSpec,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    *,
    ap_method: str = "11point",
    channels_last: bool = False,
    workers: int = 0,
) -> VOCResult:
    """VOC mAP of ``model`` on ``dataset`` at the spec's evaluation settings (the one NumPy metric)."""
    from ssd_runtime.metric import voc_map

    device = torch.device(device)
    was_training = model.training
    model.eval()
    detections, truths = [], []
    for _, dets, gts in _batches(model, dataset, spec, device, _grid(range(len(dataset)), batch_size),
                                 channels_last=channels_last, workers=workers):
        detections.extend(dets)
        truths.extend(gts)
    model.train(was_training)
    return voc_map(detections, truths, spec.class_names, ap_method=ap_method)


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
    workers: int = 0,
    source: dict[str, Any] | None = None,
) -> VOCResult | None:
    """:func:`evaluate` of ``shard``'s share of ``dataset``, written to its part of ``out``; then the mAP of all parts.

    ``checkpoint``: the model's file (its sha256 names the run in the header). The mAP comes from the
    single process, or under torchrun from rank 0 once every rank has written its part; a shard given
    by ``--shard i/N`` returns None (merge the parts with ``ssd-runtime eval --detections``). ``resume``
    skips the images already in the part.
    """
    from ssd_runtime.detections_file import DetectionsHeader, DetectionsWriter, ImageRecord, image_list_sha256
    from ssd_runtime.evaluate import parts_map
    from ssd_runtime.fileio import sha256_file
    from ssd_runtime.images import image_size
    from ssd_runtime.sharding import part_path, shard_range, wait_for_shards

    device = torch.device(device)
    records = dataset.records
    header = DetectionsHeader(
        model_sha256=sha256_file(checkpoint), class_names=tuple(spec.class_names), settings=spec.evaluation.to_dict(),
        precision="fp32", batch_size=batch_size, num_images=len(records),
        image_list_sha256=image_list_sha256(r.image_id for r in records), shard=(shard.index, shard.count),
        source={"model": str(checkpoint), "backend": "ssd_train.evaluation", "device": str(device),
                "postprocess": "numpy" if device.type == "cpu" else "torch", **(source or {})},
    )  # fmt: skip
    was_training = model.training
    model.eval()
    with DetectionsWriter(part_path(out, shard), header, resume=resume) as writer:
        todo = [b for b in _grid(shard_range(len(records), batch_size, shard), batch_size) if not set(b) <= writer.done]
        for indices, dets, _ in _batches(model, dataset, spec, device, todo, channels_last=channels_last, workers=workers):
            # the decoded image's size (header only): the ground truth's frame when the file is evaluated
            writer.write([ImageRecord(i, records[i].image_id, *image_size(records[i].image_path), d)
                          for i, d in zip(indices, dets) if i not in writer.done])
    model.train(was_training)
    wait_for_shards(shard)
    if shard.sharded and not (shard.torchrun and shard.main):
        return None
    parts = [part_path(out, Shard(i, shard.count)) for i in range(shard.count)]
    return parts_map(parts, records, ap_method=ap_method)[1]


def eval_dataset(config: TrainConfig, class_names: tuple[str, ...], spec: ModelSpec) -> VOCDetection:
    """The test split of ``config.data`` that periodic evaluation reads (the first ``eval_images`` images)."""
    test_set = VOCDetection.from_voc(config.data, "test", class_names=class_names, train=False,
                                     skip_unknown=config.skip_unknown_classes, mean=spec.mean, std=spec.std, size=spec.input_size)
    if config.eval_images and config.eval_images < len(test_set):
        test_set.records = test_set.records[: config.eval_images]
    return test_set
