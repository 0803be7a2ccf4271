"""Torch-free COCO instances reader and writer: one annotations JSON per split and its image folder.

Layout (what ``ssd-train data --format coco`` and ``ssd-train convert --to coco`` write; the first
annotations file found for a split is read)::

    ROOT/annotations/instances_<split>.json   (or <split>.json)
    ROOT/images/<file_name>                   (or ROOT/images/<split>/<file_name>, or ROOT/<split>/<file_name>)
    ROOT/<split>/_annotations.coco.json       (Roboflow's export: the images beside it)

``<split>`` is the toolkit's split name or one of its aliases (:data:`SPLIT_ALIASES`: ``trainval`` also
reads ``train``, ``test`` also reads ``val`` and ``valid``).

Records are those of :mod:`ssd_runtime.voc` (:class:`~ssd_runtime.voc.VOCRecord`), in the JSON's
image order: the image id is the ``file_name`` without its extension, boxes COCO's ``[x, y, w, h]`` in
the toolkit's frame (0-based inclusive pixels: ``x1 = x``, ``x2 = x + w - 1``, the frame a VOC box
``xmin..xmax`` maps to with ``x = xmin - 1``, ``w = xmax - xmin + 1``), so the same objects give the
same records in either layout. Classes are the categories in ascending id order (labels 1..C;
:func:`category_ids` maps back); ``iscrowd`` regions are ``difficult`` (evaluation ignores them) and
``crowd`` (training leaves them out). COCO has no difficult flag: this toolkit writes and reads an
extra ``"difficult": 1`` key on an annotation, which other tools ignore.

Refused cleanly, naming the file and the annotation id: a file that is not a COCO JSON, images whose
``file_name`` leaves the image folder, duplicate image ids or file names, annotations of an unknown
image or category, category names not in the class list (collected over the split, as VOC's), an
empty split, missing image files (listed together). Boxes are clipped to the image and degenerate or
malformed ones dropped and counted in the :class:`~ssd_runtime.voc.ReadReport` (``strict=True``
makes them errors), as in VOC.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ssd_runtime.errors import AnnotationError, DatasetError, ImageError
from ssd_runtime.fileio import atomic_write_bytes
from ssd_runtime.images import image_size
from ssd_runtime.voc import (
    BACKGROUND,
    ReadReport,
    VOCRecord,
    check_class_names,
    clip_box,
    finish_split,
    missing_files_error,
)

#: Split names also looked for, by toolkit split (COCO's train/val, Roboflow's train/valid/test).
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {"trainval": ("trainval", "train"), "test": ("test", "val", "valid")}
#: Largest annotations file read, in bytes (COCO 2017's train instances are about 450 MB).
MAX_JSON_BYTES = 2 * 1024**3
#: Roboflow's per-split annotations file name.
ROBOFLOW_FILE = "_annotations.coco.json"
#: The key this toolkit adds to an annotation for VOC's difficult flag (COCO has none).
DIFFICULT_KEY = "difficult"


def split_names(split: str) -> tuple[str, ...]:
    """``split`` and its aliases, in the order they are looked for."""
    return SPLIT_ALIASES.get(split, (split,))


def split_files(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """(annotations JSON, image folder) of ``split`` in the COCO root ``root`` (module docstring's layout)."""
    root = Path(root)
    for name in split_names(split):
        roboflow = root / name / ROBOFLOW_FILE
        if roboflow.is_file():
            return roboflow, root / name
        for candidate in (root / "annotations" / f"instances_{name}.json", root / "annotations" / f"{name}.json"):
            if candidate.is_file():
                for images in (root / "images" / name, root / name, root / "images"):
                    if images.is_dir():
                        return candidate, images
                raise DatasetError(f"{candidate}: no image folder for it: expected {root / 'images'} or {root / name}")
    looked = ", ".join(f"annotations/instances_{n}.json" for n in split_names(split))
    raise DatasetError(f"{root}: no COCO annotations for split {split!r}: looked for {looked} (or <split>/{ROBOFLOW_FILE})")


def is_coco_root(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a COCO root (an ``annotations/*.json`` or a Roboflow split)."""
    path = Path(path)
    return path.is_dir() and (any((path / "annotations").glob("*.json")) or any(path.glob(f"*/{ROBOFLOW_FILE}")))


def load_json(path: Path) -> dict[str, Any]:
    """The COCO document of ``path``, its three lists checked (``images``, ``annotations``, ``categories``)."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise AnnotationError(f"{path}: annotations file is {size} bytes, more than {MAX_JSON_BYTES}; refused")
    try:
        doc = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc}); fix or re-export the annotations") from exc
    if not isinstance(doc, dict):
        raise AnnotationError(f"{path}: a COCO file is a JSON object, found a {type(doc).__name__}")
    for key in ("images", "categories"):
        if not isinstance(doc.get(key), list):
            raise AnnotationError(f"{path}: no {key!r} list; is this a COCO instances file?")
    if not isinstance(doc.get("annotations", []), list):
        raise AnnotationError(f"{path}: 'annotations' is not a list")
    return doc


def categories(doc: dict[str, Any], path: Path) -> list[tuple[int, str]]:
    """(id, name) of every category, ascending id; ids and names unique, names not ``background``."""
    found: list[tuple[int, str]] = []
    for k, cat in enumerate(doc["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str) or not cat["name"].strip():
            raise AnnotationError(f"{path}: category {k} needs an integer 'id' and a non-empty 'name', got {cat!r}")
        found.append((int(cat["id"]), cat["name"].strip()))
    found.sort()
    ids, names = [i for i, _ in found], [n for _, n in found]
    for what, values in (("ids", ids), ("names", names)):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise AnnotationError(f"{path}: duplicate category {what} {dupes}; each category needs its own id and name")
    if BACKGROUND in names:
        raise AnnotationError(f"{path}: a category is named {BACKGROUND!r}, the name of label 0; rename it")
    return found


def coco_classes(root: str | os.PathLike, split: str = "trainval") -> tuple[tuple[str, ...], tuple[int, ...], str]:
    """(class names, background first; their category ids, in label order from 1; the file) of a COCO root."""
    path, _ = split_files(root, split)
    cats = categories(load_json(path), path)
    if not cats:
        raise AnnotationError(f"{path}: no categories; a COCO file lists its classes under 'categories'")
    return (BACKGROUND, *[n for _, n in cats]), tuple(i for i, _ in cats), str(path)


def category_ids(root: str | os.PathLike, class_names: tuple[str, ...] | list[str], split: str = "trainval") -> dict[int, int]:
    """Label (index into ``class_names``) -> COCO category id of the dataset, by name (labels whose name
    is not a category of the dataset are left out)."""
    names, ids, _ = coco_classes(root, split)
    by_name = dict(zip(names[1:], ids))
    return {label: by_name[name] for label, name in enumerate(class_names) if label and name in by_name}


def image_ids(root: str | os.PathLike, split: str) -> dict[str, int]:
    """Record image id (``file_name`` without its extension) -> the COCO image id, of ``split`` of a COCO root."""
    path, folder = split_files(root, split)
    images, _ = _images(load_json(path), path, folder, ReadReport())
    return {PurePosixPath(img["file_name"]).with_suffix("").as_posix(): img["id"] for img in images}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _inside(folder: Path, file_name: Any, where: str) -> Path:
    """``folder / file_name`` for a relative POSIX file name that stays inside ``folder``."""
    if not isinstance(file_name, str) or not file_name.strip():
        raise AnnotationError(f"{where}: 'file_name' must be a non-empty string, got {file_name!r}")
    rel = PurePosixPath(file_name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or (rel.parts and ":" in rel.parts[0]):
        raise AnnotationError(f"{where}: file_name {file_name!r} leaves the image folder {folder}; give a path relative to it")
    return folder.joinpath(*rel.parts)


def _box(ann: dict[str, Any]) -> tuple[float, float, float, float]:
    """COCO ``[x, y, w, h]`` -> toolkit xyxy (0-based inclusive pixels); ValueError when malformed."""
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        raise ValueError(f"bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f"bbox not finite: {bbox!r}")
    return x, y, x + w - 1.0, y + h - 1.0


def _images(doc: dict[str, Any], path: Path, folder: Path, report: ReadReport) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The image entries (id, file, path, size) in the JSON's order, and image id -> position."""
    images: list[dict[str, Any]] = []
    position: dict[int, int] = {}
    seen_files: set[str] = set()
    for k, img in enumerate(doc["images"]):
        where = f"{path} image {k}"
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise AnnotationError(f"{where}: an image needs an integer 'id', got {img!r}")
        where = f"{path} image id {img['id']}"
        if img["id"] in position:
            raise AnnotationError(f"{where}: image id listed twice; give each image its own id")
        image_path = _inside(folder, img.get("file_name"), where)
        file_name = PurePosixPath(img["file_name"].replace("\\", "/")).as_posix()
        if file_name in seen_files:
            raise AnnotationError(f"{where}: file_name {file_name!r} listed twice; remove the duplicate image")
        seen_files.add(file_name)
        width, height = img.get("width"), img.get("height")
        size = (width, height) if _is_int(width) and _is_int(height) and width > 0 and height > 0 else None
        position[img["id"]] = len(images)
        images.append({"id": img["id"], "file_name": file_name, "path": image_path, "size": size, "where": where})
    return images, position


# long: one pass over the images, one over the annotations (each with its checks), then the records
def read_coco_split(
    data: str | os.PathLike,
    split: str,
    class_names: tuple[str, ...] | list[str],
    *,
    strict: bool = False,
    skip_unknown: bool = False,
    report: ReadReport | None = None,
    warn: bool = True,
    max_images: int = 0,
) -> list[VOCRecord]:
    """Read every image of ``split`` of the COCO root ``data`` (see the module docstring for the frame and
    the refusals), as :func:`ssd_runtime.voc.read_voc_split` reads VOC: records in the JSON's image order,
    unknown category names collected and raised together unless ``skip_unknown``, lenient drops counted
    in ``report`` and warned about once when ``warn``, the first ``max_images`` kept (> 0).
    """
    names = check_class_names(class_names)
    report = report if report is not None else ReadReport()
    path, folder = split_files(data, split)
    doc = load_json(path)
    cats = dict(categories(doc, path))
    images, position = _images(doc, path, folder, report)
    if not images:
        raise DatasetError(f"{path}: split {split!r} has no images; add images or choose another split")
    missing = [str(img["path"]) for img in images if not img["path"].is_file()]
    if missing:
        raise missing_files_error(split, missing, str(path), f"restore them under {folder} or remove their entries")
    index = {name: i for i, name in enumerate(names)}
    unknown: dict[str, list[str]] | None = None if skip_unknown else {}
    objects: list[list[tuple[list[float], int, bool, bool, float]]] = [[] for _ in images]
    sizes = [img["size"] for img in images]
    seen_ids: set[int] = set()
    for k, ann in enumerate(doc.get("annotations", [])):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            raise AnnotationError(f"{path} annotation {k}: an annotation needs an integer 'id', got {ann!r}"[:400])
        where = f"{path} annotation id {ann['id']}"
        if ann["id"] in seen_ids:
            raise AnnotationError(f"{where}: annotation id listed twice; give each annotation its own id")
        seen_ids.add(ann["id"])
        if ann.get("image_id") not in position:
            raise AnnotationError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'; fix or remove the annotation")
        if ann.get("category_id") not in cats:
            raise AnnotationError(
                f"{where}: category_id {ann.get('category_id')!r} is not in 'categories' {sorted(cats)}; fix the annotation"
            )
        name = cats[ann["category_id"]]
        if name not in index:
            if unknown is not None:
                unknown.setdefault(name, []).append(f"{path.name} annotation id {ann['id']}")
                continue
            if skip_unknown:
                report.add("unknown_class", f"{where} ({name!r})")
                continue
        at = position[ann["image_id"]]
        try:
            box = _box(ann)
            crowd = _flag(ann.get("iscrowd", 0), "iscrowd")
            difficult = _flag(ann.get(DIFFICULT_KEY, 0), DIFFICULT_KEY)
        except ValueError as exc:
            if strict:
                raise AnnotationError(f"{where} ({name}): malformed annotation: {exc}; fix it") from exc
            report.add("malformed_box", f"{where}: {exc}")
            continue
        if sizes[at] is None:
            sizes[at] = _size_from_image(images[at], report)
        width, height = sizes[at]
        clipped, was_clipped = clip_box(box, width, height)
        if was_clipped:
            report.add("clipped_box", where)
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            if strict:
                raise AnnotationError(
                    f"{where} ({name}): degenerate box bbox={ann['bbox']} in a {width}x{height} image "
                    "(empty after clipping); fix or remove it"
                )
            report.add("degenerate_box", where)
            continue
        area = ann.get("area")
        area = float(area) if isinstance(area, (int, float)) and not isinstance(area, bool) and area >= 0 else math.nan
        objects[at].append((list(clipped), index[name], difficult or crowd, crowd, area))
    records = []
    for img, size, objs in zip(images, sizes, objects):
        width, height = size if size is not None else _size_from_image(img, report)
        records.append(VOCRecord(
            image_id=PurePosixPath(img["file_name"]).with_suffix("").as_posix(), image_path=img["path"],
            annotation_path=path, width=width, height=height,
            boxes=np.asarray([o[0] for o in objs], dtype=np.float32).reshape(-1, 4),
            labels=np.asarray([o[1] for o in objs], dtype=np.int64),
            difficult=np.asarray([o[2] for o in objs], dtype=bool), crowd=np.asarray([o[3] for o in objs], dtype=bool),
            area=np.asarray([o[4] for o in objs], dtype=np.float64),
        ))  # fmt: skip
    return finish_split(records, split, names, report, unknown, warn=warn, max_images=max_images, what="COCO",
                        classes_hint=f"the categories of {path.name}")


def _flag(value: Any, key: str) -> bool:
    if value in (0, 1, True, False):
        return bool(value)
    raise ValueError(f"{key} must be 0 or 1, got {value!r}")


def _size_from_image(img: dict[str, Any], report: ReadReport) -> tuple[int, int]:
    """(width, height) of an image entry without a valid size, from its file's header (counted in ``report``)."""
    try:
        size = image_size(img["path"])
    except ImageError as exc:
        raise AnnotationError(f"{img['where']}: no valid width/height, and the image cannot be read: {exc}") from exc
    report.add("size_from_image", img["where"])
    img["size"] = size
    return size


def coco_document(
    records: list[VOCRecord], class_names: tuple[str, ...] | list[str], file_names: list[str], *,
    category_ids: dict[int, int] | None = None, image_ids: list[int] | None = None,
) -> dict[str, Any]:
    """The COCO instances document of ``records`` (their images under ``file_names``).

    ``category_ids``: label -> COCO category id (default: the label itself); ``image_ids``: one per
    record (default 1..N). Annotation ids are 1..M in record order. Boxes are written as ``[x, y, w, h]``
    (``w = x2 - x1 + 1``: the inverse of the reader's frame), ``area`` as read (:func:`box_areas`); crowd regions
    as ``iscrowd: 1``, difficult objects with the extra ``"difficult": 1`` key.
    """
    ids = category_ids or {label: label for label in range(1, len(class_names))}
    cats = [{"id": ids[label], "name": class_names[label], "supercategory": "none"} for label in range(1, len(class_names))]
    image_ids = image_ids or list(range(1, len(records) + 1))
    images, annotations = [], []
    for record, image_id, file_name in zip(records, image_ids, file_names):
        images.append({"id": image_id, "file_name": file_name, "width": record.width, "height": record.height})
        crowd = record.crowd if record.crowd is not None else np.zeros(record.num_objects, dtype=bool)
        for box, label, difficult, is_crowd, area in zip(record.boxes.tolist(), record.labels.tolist(),
                                                         record.difficult.tolist(), crowd.tolist(), box_areas(record)):
            x1, y1, x2, y2 = box
            w, h = x2 - x1 + 1.0, y2 - y1 + 1.0
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": ids[label],
                   "bbox": [_number(v) for v in (x1, y1, w, h)], "area": _number(area), "iscrowd": int(is_crowd)}
            if difficult and not is_crowd:
                ann[DIFFICULT_KEY] = 1
            annotations.append(ann)
    return {"info": {"description": "written by ssd300-toolkit"}, "images": images, "annotations": annotations,
            "categories": cats}


def box_areas(record: VOCRecord, *, annotated: bool = True) -> list[float]:
    """COCO's ``area`` of each object of ``record``: the annotated one where the record has it (and
    ``annotated``), else the box's (``w * h`` in the reader's frame)."""
    boxes = record.boxes.astype(np.float64)
    areas = (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0)
    if annotated and record.area is not None:
        areas = np.where(np.isnan(record.area), areas, record.area)
    return areas.tolist()


def _number(value: float) -> int | float:
    """An integral float as an int (``10`` rather than ``10.0``), others as they are."""
    return int(value) if float(value).is_integer() else float(value)


def write_coco_json(path: str | os.PathLike, document: dict[str, Any]) -> Path:
    """Write a COCO document atomically (:mod:`ssd_runtime.fileio`)."""
    path = Path(path)
    atomic_write_bytes(path, json.dumps(document, separators=(",", ":")).encode("utf-8"))
    return path
