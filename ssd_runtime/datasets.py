"""The dataset layouts (Pascal VOC, COCO, YOLO), told apart by what is on disk, and the one reader of a split.

Each layout has its reader beside the others (:mod:`ssd_runtime.voc`, :mod:`ssd_runtime.coco`,
:mod:`ssd_runtime.yolo`), all producing the same :class:`~ssd_runtime.voc.VOCRecord` records, so
training, evaluation and calibration read any of them the same way. :func:`detect_format` looks at the
folder: a VOC root or devkit (``Annotations/``, ``VOCdevkit/``, ``VOC20*/``), a COCO root
(``annotations/*.json`` or Roboflow's ``<split>/_annotations.coco.json``), a YOLO root (``data.yaml``, or
``images/`` beside ``labels/``); several paths are VOC roots.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ssd_runtime.classes import dataset_classes as voc_classes
from ssd_runtime.coco import coco_classes, is_coco_root, read_coco_split, split_files
from ssd_runtime.errors import DatasetError
from ssd_runtime.options import DATA_FORMATS
from ssd_runtime.voc import ReadReport, VOCRecord, read_voc_split, split_roots
from ssd_runtime.yolo import is_yolo_root, read_yolo_split, split_images, yolo_classes

#: The layouts, by name (``--data-format``, :data:`ssd_runtime.options.DATA_FORMATS`); "auto" detects.
AUTO, *_layouts = DATA_FORMATS
FORMATS: tuple[str, ...] = tuple(_layouts)

_READERS = {"voc": read_voc_split, "coco": read_coco_split, "yolo": read_yolo_split}


def _is_voc(path: Path) -> bool:
    return (path / "Annotations").is_dir() or (path / "VOCdevkit").is_dir() or any(path.glob("VOC20*/ImageSets"))


def detect_format(data: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    """The layout of ``data`` ("voc", "coco" or "yolo"), by what is on disk (module docstring).

    A path that is none of them is "voc": its reader says what it expected (VOC, COCO or YOLO files).
    """
    if not isinstance(data, (str, os.PathLike)):
        paths = list(data)
        if len(paths) != 1:
            return "voc"
        data = paths[0]
    path = Path(data)
    for name, test in (("voc", _is_voc), ("coco", is_coco_root), ("yolo", is_yolo_root)):
        if path.is_dir() and test(path):
            return name
    return "voc"


def resolve_format(data: str | os.PathLike | Sequence[str | os.PathLike], format: str = AUTO) -> str:
    """``format`` checked, or detected when "auto"."""
    if format == AUTO:
        return detect_format(data)
    if format not in FORMATS:
        raise ValueError(f"dataset format must be one of {(AUTO, *FORMATS)}, got {format!r}")
    return format


def has_split(data: str | os.PathLike | Sequence[str | os.PathLike], split: str, *, format: str = AUTO) -> bool:
    """Whether ``data`` has ``split`` (its split file, annotations file or image folder; not whether it reads)."""
    fmt = resolve_format(data, format)
    one = data if isinstance(data, (str, os.PathLike)) else list(data)[0]
    try:
        if fmt == "voc":
            return all((root / "ImageSets" / "Main" / f"{split}.txt").is_file() for root in split_roots(data, split))
        if fmt == "coco":
            split_files(one, split)
        else:
            split_images(one, split)
    except DatasetError:
        return False
    return True


def read_split(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    split: str,
    class_names: tuple[str, ...] | list[str],
    *,
    format: str = AUTO,
    strict: bool = False,
    skip_unknown: bool = False,
    report: ReadReport | None = None,
    warn: bool = True,
    max_images: int = 0,
) -> list[VOCRecord]:
    """Every image of ``split`` of ``data`` in any layout: the one reader of a split (training, every
    evaluation, calibration). Arguments and refusals as :func:`ssd_runtime.voc.read_voc_split`'s."""
    fmt = resolve_format(data, format)
    if fmt != "voc" and not isinstance(data, (str, os.PathLike)):
        data = list(data)[0]
    return _READERS[fmt](data, split, class_names, strict=strict, skip_unknown=skip_unknown, report=report,  # type: ignore[arg-type]
                         warn=warn, max_images=max_images)


def dataset_classes(
    data: str | os.PathLike | Sequence[str | os.PathLike], split: str = "trainval", *, format: str = AUTO, warn: bool = True
) -> tuple[tuple[str, ...], str]:
    """(class names, background first; where they came from) of a dataset in any layout: VOC's
    (:func:`ssd_runtime.classes.dataset_classes`), a COCO file's categories in id order, a YOLO
    ``data.yaml``'s names."""
    fmt = resolve_format(data, format)
    if fmt == "voc":
        return voc_classes(data, split, warn=warn)  # type: ignore[arg-type]
    one = data if isinstance(data, (str, os.PathLike)) else list(data)[0]
    if fmt == "coco":
        names, _, source = coco_classes(one, split)
        return names, source
    return yolo_classes(one)
