"""Detection over an image list of any length: batches in a fixed grid, the next one decoded in a thread.

Memory is bounded by two batches of pixels (the one running and the one being decoded) plus what the
caller's ``sink`` keeps: a :class:`~ssd_runtime.detections_file.DetectionsWriter` keeps nothing, an
in-memory list keeps each image's detections.

Batches are the fixed grid ``[b * batch_size, (b + 1) * batch_size)`` of image indices, whatever the
shard or the images already done: a batch with any image left to do runs whole (its done images are
not written again). So every image is always run in the same batch, and a resumed or sharded run
gives bit-identical detections to one uninterrupted process.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from ssd_runtime.detections_file import DetectionsHeader, DetectionsWriter, ImageRecord, image_list_sha256
from ssd_runtime.detector import Detector
from ssd_runtime.fileio import sha256_file
from ssd_runtime.sharding import Shard, part_path, shard_range, wait_for_shards
from ssd_runtime.spec import PostprocessSettings

__all__ = ["ImageItem", "detect_to_file", "run_detections"]


@dataclass(frozen=True)
class ImageItem:
    """One image of the list: its ``index`` (position in the whole list), ``image_id`` and file ``path``."""

    index: int
    image_id: str
    path: Path


def run_detections(
    detector: Detector,
    items: Sequence[ImageItem],
    settings: PostprocessSettings,
    sink: Callable[[list[ImageRecord]], Any],
    *,
    batch_size: int = 8,
    done: Collection[int] = frozenset(),
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Detect ``items`` (sorted by index) in grid batches; ``sink`` gets each batch's records not in ``done``.

    ``progress(n)`` is called with the number of images each batch added. Returns run facts: images
    written, images skipped as done, seconds, images/s (of the images run, re-run ones included).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batches = [list(chunk) for _, chunk in groupby(items, key=lambda item: item.index // batch_size)]
    pending = [chunk for chunk in batches if any(item.index not in done for item in chunk)]
    ran = written = 0
    start = time.perf_counter()
    # one decoding thread: PIL's decode and resize and the backend's run both release the GIL. On the
    # 2-core CPU decoding is 3.5 ms per image beside 10-13 ms of a width-0.125 model's inference
    # (BENCHMARKS.md, "Streaming and sharded evaluation").
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        def prepare(k: int):
            return pool.submit(detector.prepare, [item.path for item in pending[k]]) if k < len(pending) else None

        next_batch = prepare(0)
        for k, chunk in enumerate(pending):
            batch = next_batch.result()
            next_batch = prepare(k + 1)
            detections = detector.fractional_detections(batch.pixels, settings)
            records = [ImageRecord(item.index, item.image_id, int(width), int(height), dets)
                       for item, dets, (width, height) in zip(chunk, detections, batch.sizes) if item.index not in done]
            sink(records)
            ran += len(chunk)
            written += len(records)
            if progress is not None:
                progress(len(records))
    seconds = time.perf_counter() - start
    return {"images": written, "skipped": len(items) - written, "seconds": round(seconds, 3),
            "images_per_s": round(ran / seconds, 2) if seconds > 0 else None}


def detect_to_file(
    detector: Detector,
    model: str | os.PathLike,
    items: Sequence[ImageItem],
    out: str | os.PathLike,
    settings: PostprocessSettings,
    *,
    precision: str,
    batch_size: int = 8,
    shard: Shard = Shard(),
    resume: bool = False,
    source: dict[str, Any] | None = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Detect ``shard``'s share of ``items`` (the whole image list) into its part of ``out``; under torchrun,
    then wait until every rank has written its part (:func:`~ssd_runtime.sharding.wait_for_shards`).

    ``model`` is the detector's file (its sha256 goes into the header). With ``resume`` the images
    already in the file are skipped. Returns run facts with ``path`` (the file written), ``shard``
    and ``resumed_images``. Once it returns, a process whose ``shard.merges`` holds every part
    (:func:`~ssd_runtime.sharding.part_paths`); a shard given by ``--shard i/N`` has nobody to wait for.
    """
    path = part_path(out, shard)
    header = DetectionsHeader(
        model_sha256=sha256_file(model), class_names=tuple(detector.spec.class_names), settings=settings.to_dict(),
        precision=precision, batch_size=batch_size, num_images=len(items),
        image_list_sha256=image_list_sha256(item.image_id for item in items), shard=(shard.index, shard.count),
        source={"model": str(model), **(source or {})},
    )  # fmt: skip
    span = shard_range(len(items), batch_size, shard)
    share = items[span.start : span.stop]
    with DetectionsWriter(path, header, resume=resume) as writer:
        facts = run_detections(detector, share, settings, writer.write, batch_size=batch_size, done=writer.done,
                               progress=progress)
        facts = {**facts, "path": str(path), "shard": str(shard), "resumed_images": len(writer.done),
                 "torn_line_dropped": writer.torn}
    wait_for_shards(shard)  # the part is closed: the other ranks may read it
    return facts
