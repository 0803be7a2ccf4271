"""Converting a dataset between the Pascal VOC, COCO and YOLO layouts (``ssd-train convert``).

The source is read by :func:`ssd_runtime.datasets.read_split` (each split present: ``trainval`` and
``test`` by default) with its own class list, and written in the target layout by the writer beside
each reader (:func:`ssd_runtime.voc.record_xml`, :func:`ssd_runtime.coco.coco_document`,
:func:`ssd_runtime.yolo.label_text`), images copied (or hard-linked, or moved). What the toolkit reads
back from the result is the same records, except what the target cannot carry, which the report
states with counts (:data:`CANNOT_CARRY`):

- VOC has no crowd regions (written as difficult objects: still ignored by evaluation, but trained on),
  no category ids and no annotated areas; its image ids are plain file names (``a/b`` becomes ``a_b``).
- COCO has no difficult flag: written as the extra annotation key ``"difficult": 1``, which this
  toolkit reads and other tools ignore (they see ordinary objects).
- YOLO has no difficult flag (those objects become ordinary ones), no crowd regions (left out, as
  Ultralytics' own COCO converter does), no image size (read from the images), no category ids and no
  annotated areas.

The result is written into a temporary folder beside ``out`` and moved into place at the end, so an
interrupted conversion leaves nothing half-written; ``out`` must not exist or be empty.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssd_runtime.coco import box_areas, coco_classes, coco_document, write_coco_json
from ssd_runtime.datasets import FORMATS, dataset_classes, has_split, read_split, resolve_format
from ssd_runtime.errors import DatasetError
from ssd_runtime.fileio import atomic_write_bytes
from ssd_runtime.voc import VOCRecord, record_xml, without_crowd
from ssd_runtime.yolo import data_yaml_text, label_text

#: Splits converted by default (each one the source has).
SPLITS = ("trainval", "test")
#: How images reach the target: copied, hard-linked (same file system), or moved (the source loses them).
IMAGE_MODES = ("copy", "link", "move")
#: What each target cannot carry, by kind of object or fact counted in the report.
CANNOT_CARRY: dict[str, dict[str, str]] = {
    "voc": {"crowd": "crowd regions written as difficult objects (evaluation still ignores them; training uses them)",
            "category_ids": "COCO category ids other than 1..C not kept (VOC has class names only)",
            "flattened_ids": "image ids in subfolders flattened ('a/b' -> 'a_b')",
            "area": "COCO's annotated areas (a segment's) not kept: COCO metrics size those objects by their boxes"},
    "coco": {"difficult": "difficult flags written as the extra key 'difficult' (read by this toolkit, ignored by other tools)"},
    "yolo": {"difficult": "difficult flags dropped (the objects become ordinary ones)",
             "crowd": "crowd regions left out (YOLO has none)",
             "image_size": "image sizes not stored (read from the images)",
             "category_ids": "COCO category ids not kept (YOLO classes are 0..C-1)",
             "area": "COCO's annotated areas (a segment's) not kept: COCO metrics size those objects by their boxes"},
}
#: The YOLO data.yaml key of each toolkit split (Ultralytics' names).
YOLO_KEYS = {"trainval": "train", "test": "val"}


def _place_image(source: Path, target: Path, mode: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link":
        os.link(source, target)
    elif mode == "move":
        shutil.move(source, target)
    else:
        shutil.copy2(source, target)


def _voc_ids(split: str, records: list[VOCRecord], taken: dict[str, Path]) -> list[str]:
    """Plain VOC ids of ``records`` (subfolders flattened), each naming one image across every split."""
    ids = []
    for record in records:
        image_id = record.image_id.replace("/", "_")
        if taken.get(image_id, record.image_path) != record.image_path:
            raise DatasetError(
                f"split {split!r}: two different images would both be VOC id {image_id!r} ({taken[image_id]} and "
                f"{record.image_path}); rename one, or convert to COCO or YOLO, which keep splits in their own folders"
            )
        taken[image_id] = record.image_path
        ids.append(image_id)
    return ids


def _write_split(tmp: Path, to: str, split: str, records: list[VOCRecord], class_names: tuple[str, ...],
                 category_ids: dict[int, int] | None, mode: str, taken: dict[str, Path], placed: set[Path]) -> None:
    """Write one split of the target layout into ``tmp``."""
    if to == "voc":
        ids = _voc_ids(split, records, taken)
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        for record, image_id in zip(records, ids):
            name = f"{image_id}{record.image_path.suffix}"
            if record.image_path not in placed:
                _place_image(record.image_path, tmp / "JPEGImages" / name, mode)
                (tmp / "Annotations" / f"{image_id}.xml").write_text(record_xml(record, class_names, name), encoding="utf-8")
                placed.add(record.image_path)
        (tmp / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    elif to == "coco":
        names = [f"{r.image_id}{r.image_path.suffix}" for r in records]
        for record, name in zip(records, names):
            _place_image(record.image_path, tmp / "images" / split / name, mode)
        write_coco_json(tmp / "annotations" / f"instances_{split}.json",
                        coco_document(records, class_names, names, category_ids=category_ids))
    else:
        for record in records:
            _place_image(record.image_path, tmp / "images" / split / f"{record.image_id}{record.image_path.suffix}", mode)
            label = tmp / "labels" / split / f"{record.image_id}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(label_text(without_crowd(record)), encoding="utf-8")


def _lost(to: str, records: list[VOCRecord]) -> dict[str, int]:
    """Counts of what ``to`` cannot carry in ``records`` (keys of :data:`CANNOT_CARRY`)."""
    crowd = sum(int(r.crowd.sum()) for r in records if r.crowd is not None)
    difficult = sum(int(r.difficult.sum()) for r in records) - crowd
    area = sum(int(np.sum(~np.isclose(box_areas(r, annotated=False), r.area) & ~np.isnan(r.area))) for r in records if r.area is not None)
    counts = {"crowd": crowd, "difficult": difficult, "image_size": len(records) if to == "yolo" else 0, "area": area,
              "flattened_ids": sum("/" in r.image_id for r in records) if to == "voc" else 0}
    return {kind: n for kind, n in counts.items() if kind in CANNOT_CARRY[to] and n}


def convert_dataset(
    data: str | os.PathLike,
    out: str | os.PathLike,
    to: str,
    *,
    data_format: str = "auto",
    splits: Sequence[str] = SPLITS,
    images: str = "copy",
) -> dict[str, Any]:
    """Write the dataset ``data`` (layout ``data_format``, "auto": detected) to ``out`` in layout ``to`` (module
    docstring); return a report.

    splits: the splits to convert; one the source does not have is skipped (listed in the report),
    none at all is an error. images: :data:`IMAGE_MODES`. The report (plain data): source and target
    layouts, classes, images and objects per split, and ``cannot_carry``: for each thing the target
    cannot express, its count and what was done.
    """
    if to not in FORMATS:
        raise ValueError(f"target format must be one of {FORMATS}, got {to!r}")
    if images not in IMAGE_MODES:
        raise ValueError(f"images must be one of {IMAGE_MODES}, got {images!r}")
    start = time.perf_counter()
    source_format = resolve_format(data, data_format)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not an empty folder; choose a new folder to write the {to} dataset to")
    present = [split for split in splits if has_split(data, split, format=source_format)]
    if not present:
        raise DatasetError(f"{data}: none of the splits {list(splits)} found in this {source_format} dataset")
    class_names, class_source = dataset_classes(data, present[0], format=source_format)
    category_ids = None
    if source_format == "coco" and to == "coco":
        category_ids = dict(enumerate(coco_classes(data, present[0])[1], 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    report_splits: dict[str, dict[str, int]] = {}
    lost: dict[str, int] = {}
    try:
        taken: dict[str, Path] = {}
        placed: set[Path] = set()
        for split in present:
            records = read_split(data, split, class_names, format=source_format)
            _write_split(tmp, to, split, records, class_names, category_ids, images, taken, placed)
            report_splits[split] = {"images": len(records), "objects": sum(r.num_objects for r in records)}
            for kind, n in _lost(to, records).items():
                lost[kind] = lost.get(kind, 0) + n
        ids = coco_classes(data, present[0])[1] if source_format == "coco" else ()
        if "category_ids" in CANNOT_CARRY[to] and ids != tuple(range(1, len(ids) + 1)):
            lost["category_ids"] = len(ids)  # ids other than 1..C: the target numbers the classes 1..C (VOC) or 0..C-1
        if to == "voc":
            (tmp / "classes.txt").write_text("".join(f"{n}\n" for n in class_names[1:]), encoding="utf-8")
        elif to == "yolo":
            keys = {YOLO_KEYS.get(s, s): f"images/{s}" for s in present}
            atomic_write_bytes(tmp / "data.yaml", data_yaml_text(class_names, keys).encode("utf-8"))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "source": str(data), "from": source_format, "out": str(out), "to": to, "classes": list(class_names[1:]),
        "class_source": class_source, "splits": report_splits, "skipped_splits": [s for s in splits if s not in present],
        "cannot_carry": {kind: {"count": n, "note": CANNOT_CARRY[to][kind]} for kind, n in lost.items()},
        "seconds": round(time.perf_counter() - start, 2),
    }  # fmt: skip
