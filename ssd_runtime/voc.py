"""Torch-free Pascal VOC reader: split files and XML annotations (parsed with defusedxml).

Class lists (``classes.txt``, the VOC classes, names inferred from the XML) live in :mod:`ssd_runtime.classes`.

Layout (one "VOC root" per year; the generated dataset of ``ssd-train data`` is one such root)::

    VOCdevkit/VOC2007/Annotations/<id>.xml
                     /JPEGImages/<id>.jpg
                     /ImageSets/Main/{trainval,test}.txt
                     /classes.txt            (optional: one class name per line, no background)
    VOCdevkit/VOC2012/...

Training reads ``trainval`` of VOC2007 and VOC2012 together, testing reads VOC2007 ``test``
(:func:`split_roots` finds them). Boxes come out as float32 *pixel* xyxy in the reference's frame:
the 1-based VOC coordinates minus 1 (all four), i.e. 0-based inclusive pixel indices, clipped to the
image. Labels are int64 indices into the class list (1..C-1; 0 is background); difficult flags are kept.

Bad annotations follow ``docs/reference.md`` ("Loading untrusted files"): unsafe XML (entity
expansion, external entities, DTDs) is refused; a missing ``<size>`` uses the image header, a missing ``<difficult>`` is 0;
an unknown class is an error listing names and files unless ``skip_unknown=True``; boxes outside the
image are clipped, non-integer coordinates parsed as floats, and degenerate or malformed objects
dropped and counted in :class:`ReadReport` (``strict=True`` makes them errors); images with no objects
are kept as negatives; ids whose files are missing are listed together in one pre-flight error.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ssd_runtime.errors import AnnotationError, DatasetError, ImageError
from ssd_runtime.images import image_size

if TYPE_CHECKING:  # the annotation only: defusedxml parses into the standard library's elements
    from xml.etree.ElementTree import Element

BACKGROUND = "background"
#: Largest annotation file read, in bytes (real VOC files are about 1 KB).
MAX_XML_BYTES = 4 * 1024 * 1024
#: Folders (below a VOCdevkit) read for each split when a devkit is given.
TRAIN_YEARS = ("VOC2007", "VOC2012")
TEST_YEARS = ("VOC2007",)


@dataclass(frozen=True, eq=False)
class VOCRecord:
    """One annotated image.

    boxes: float32 (K, 4) pixel xyxy, 0-based (VOC value - 1), clipped to [0, width] x [0, height].
    labels: int64 (K,) class indices, 1..C-1.
    difficult: bool (K,): objects evaluation ignores (VOC's difficult; COCO's crowd regions are difficult too).
    width, height: image size in pixels (from ``<size>``, else from the image header).
    crowd: bool (K,) or None: COCO crowd regions (a subset of ``difficult``), left out of training
        (:func:`without_crowd`); None for layouts that have none (VOC, YOLO).
    area: float64 (K,) or None: COCO's annotated ``area`` of each object (a segment's; ``nan`` where the
        file gives none), which COCO's metrics sort objects by size with; None: the box areas are used.
    annotation_path: the file the objects came from (a VOC XML, a COCO JSON, a YOLO label file).
    """

    image_id: str
    image_path: Path
    annotation_path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    crowd: np.ndarray | None = None
    area: np.ndarray | None = None

    @property
    def num_objects(self) -> int:
        return int(self.labels.shape[0])


def without_crowd(record: VOCRecord) -> VOCRecord:
    """``record`` without its crowd regions (what training reads); the record itself when it has none."""
    if record.crowd is None or not record.crowd.any():
        return record
    keep = ~record.crowd
    return dataclasses.replace(record, boxes=record.boxes[keep], labels=record.labels[keep],
                               difficult=record.difficult[keep], crowd=record.crowd[keep],
                               area=None if record.area is None else record.area[keep])


@dataclass
class ReadReport:
    """What a lenient read dropped or defaulted, by kind (e.g. ``degenerate_box``), with examples."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, where: str) -> None:
        self.counts[kind] += 1
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < 5:
            self.examples[kind].append(where)

    def summary(self) -> str:
        parts = [f"{kind}: {n} (e.g. {'; '.join(self.examples[kind][:2])})" for kind, n in sorted(self.counts.items())]
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts), "examples": {k: list(v) for k, v in self.examples.items()}}


# ----------------------------------------------------------------------------------------------
# What the readers of every layout share (VOC here, COCO in ssd_runtime.coco, YOLO in ssd_runtime.yolo)


def clip_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[tuple[float, float, float, float], bool]:
    """(``box`` pixel xyxy clipped to [0, width] x [0, height], whether clipping changed it)."""
    x1, y1, x2, y2 = box
    clipped = (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))
    return clipped, clipped != (x1, y1, x2, y2)


def missing_files_error(split: str, missing: list[str], listed_by: str, fix: str) -> DatasetError:
    """One error listing every missing file (the first 50) of ``split``."""
    shown = "\n  ".join(missing[:50])
    more = f"\n  ... and {len(missing) - 50} more" if len(missing) > 50 else ""
    return DatasetError(f"split {split!r}: {len(missing)} file(s) listed by {listed_by} are missing:\n  {shown}{more}\n{fix}")


def check_class_names(class_names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``class_names`` as a tuple; they must start with background."""
    names = tuple(class_names)
    if not names or names[0] != BACKGROUND:
        raise AnnotationError(f"class_names must start with {BACKGROUND!r}, got {list(names[:3])}...")
    return names


def finish_split(
    records: list[VOCRecord], split: str, names: tuple[str, ...], report: ReadReport, unknown: dict[str, list[str]] | None,
    *, warn: bool, max_images: int, what: str, classes_hint: str,
) -> list[VOCRecord]:
    """The end of every split read: unknown class names raised together, lenient drops warned about once
    (``what`` names the layout), the first ``max_images`` records kept (> 0)."""
    if unknown:
        lines = [f"  {name!r} in {len(files)} file(s), e.g. {', '.join(files[:3])}" for name, files in sorted(unknown.items())]
        raise AnnotationError(
            f"split {split!r}: {len(unknown)} class name(s) not in the class list {list(names[1:])}:\n"
            + "\n".join(lines)
            + f"\npass the dataset's own class list ({classes_hint}), or skip_unknown=True to drop those objects"
        )
    dropped = {k: v for k, v in report.counts.items() if k not in ("difficult_defaulted",)}
    if warn and dropped:
        warnings.warn(f"{what} split {split!r}: {report.summary()}", stacklevel=3)
    return records[:max_images] if max_images else records


# ----------------------------------------------------------------------------------------------
# Layout


def split_roots(path: str | os.PathLike | Sequence[str | os.PathLike], split: str) -> list[Path]:
    """VOC roots to read for ``split`` under ``path``.

    ``path`` may be a VOC root itself (it has ``Annotations/``), a ``VOCdevkit`` folder, or a folder
    holding ``VOCdevkit``. From a devkit, ``trainval``/``train`` read every year in
    :data:`TRAIN_YEARS` that has the split file, other splits (``test``) read :data:`TEST_YEARS`.
    A list of several paths is a list of VOC roots, taken as they are; a list of one is that path.
    """
    if not isinstance(path, (str, os.PathLike)):
        paths = list(path)
        if len(paths) != 1:
            return [Path(p) for p in paths]
        path = paths[0]
    path = Path(path)
    if (path / "Annotations").is_dir():
        return [path]
    devkit = path / "VOCdevkit" if (path / "VOCdevkit").is_dir() else path
    years = TRAIN_YEARS if split in ("trainval", "train") else TEST_YEARS
    roots = [devkit / y for y in years if (devkit / y / "ImageSets" / "Main" / f"{split}.txt").is_file()]
    if not roots:
        raise DatasetError(
            f"{path}: no VOC data for split {split!r}: expected {path}/Annotations (a VOC root) or "
            f"{devkit}/<{'|'.join(years)}>/ImageSets/Main/{split}.txt (a COCO or YOLO dataset: `ssd-train convert --to voc` "
            "makes a VOC root of it where a command reads VOC only); generate a dataset with "
            "`ssd-train data --out DIR` or point to your VOCdevkit"
        )
    return roots


def fit_to_image(record: VOCRecord, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The record's (boxes, labels, difficult) for the decoded image of ``size`` = (width, height).

    When the annotation's ``<size>`` disagrees with the decoded image, pixel boxes are clipped to the
    image and boxes left empty are dropped (with their labels and difficult flags); otherwise the
    record's arrays are returned as they are.
    """
    width, height = size
    if (width, height) == (record.width, record.height):
        return record.boxes, record.labels, record.difficult
    boxes = record.boxes.copy()
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], record.labels[keep], record.difficult[keep]


def read_split_ids(root: str | os.PathLike, split: str) -> list[str]:
    """Image ids of ``ImageSets/Main/<split>.txt`` in a VOC root (blank lines ignored, order kept)."""
    split_file = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise DatasetError(
            f"{split_file}: split file not found; a VOC root needs ImageSets/Main/{split}.txt "
            "listing one image id per line"
        )
    ids: list[str] = []
    seen: set[str] = set()
    for line_no, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        image_id = parts[0]
        if "/" in image_id or "\\" in image_id or image_id in (".", ".."):
            raise AnnotationError(f"{split_file}:{line_no}: image id {image_id!r} must be a plain file stem")
        if image_id in seen:
            raise AnnotationError(f"{split_file}:{line_no}: image id {image_id!r} listed twice; remove the duplicate")
        seen.add(image_id)
        ids.append(image_id)
    return ids


def _image_path(root: Path, image_id: str) -> Path:
    """JPEGImages/<id>.jpg, or the first existing .jpeg/.png/.JPG variant."""
    default = root / "JPEGImages" / f"{image_id}.jpg"
    if default.exists():
        return default
    for ext in (".jpeg", ".JPG", ".JPEG", ".png", ".PNG"):
        candidate = root / "JPEGImages" / f"{image_id}{ext}"
        if candidate.exists():
            return candidate
    return default


def preflight(roots: list[Path], split: str) -> list[tuple[Path, str, Path, Path]]:
    """(root, id, image path, annotation path) for every id of ``split``; one error lists all missing files."""
    items = []
    missing: list[str] = []
    for root in roots:
        for image_id in read_split_ids(root, split):
            image_path = _image_path(root, image_id)
            xml_path = root / "Annotations" / f"{image_id}.xml"
            for p in (image_path, xml_path):
                if not p.is_file():
                    missing.append(str(p))
            items.append((root, image_id, image_path, xml_path))
    if missing:
        raise missing_files_error(split, missing, f"ImageSets/Main/{split}.txt", "restore them or remove their ids from the split file")
    return items


# ----------------------------------------------------------------------------------------------
# XML


def parse_xml(xml_path: Path):
    """Parse one annotation with defusedxml (imported here: importing ssd_runtime must not need it)."""
    try:
        import defusedxml.ElementTree as SafeET
        from defusedxml import DefusedXmlException
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("reading VOC annotations needs defusedxml: pip install defusedxml") from exc
    from xml.etree.ElementTree import ParseError

    size = xml_path.stat().st_size
    if size > MAX_XML_BYTES:
        raise AnnotationError(f"{xml_path}: annotation is {size} bytes, more than {MAX_XML_BYTES}; refused")
    try:
        return SafeET.parse(str(xml_path), forbid_dtd=True, forbid_entities=True, forbid_external=True).getroot()
    except DefusedXmlException as exc:
        raise AnnotationError(
            f"{xml_path}: refused unsafe XML ({type(exc).__name__}: DTDs and entities are not allowed in "
            "annotations); remove the <!DOCTYPE>/<!ENTITY> declarations"
        ) from exc
    except ParseError as exc:
        raise AnnotationError(f"{xml_path}: malformed XML ({exc}); fix or regenerate the annotation") from exc


def _number(text: str | None) -> float:
    """'273', ' 273.5 ' -> float; raises ValueError for missing, non-numeric or non-finite text."""
    if text is None:
        raise ValueError("missing")
    value = float(text.strip())
    if not math.isfinite(value):
        raise ValueError(f"not finite: {text!r}")
    return value


def _flag(text: str | None) -> bool:
    """'0'/'1' (also '0.0', 'true'); missing or empty -> False."""
    if text is None or not text.strip():
        return False
    t = text.strip().lower()
    if t in ("true", "yes"):
        return True
    if t in ("false", "no"):
        return False
    return float(t) != 0


def _annotated_size(root: Element, xml_path: Path, image_path: str | os.PathLike | None, report: ReadReport) -> tuple[int, int]:
    """(width, height) from ``<size>``; a missing or invalid one from the image header (counted in ``report``)."""
    width = height = 0
    size_el = root.find("size")
    if size_el is not None:
        try:
            width, height = int(_number(size_el.findtext("width"))), int(_number(size_el.findtext("height")))
        except ValueError:
            width = height = 0
    if width <= 0 or height <= 0:
        if image_path is None:
            raise AnnotationError(f"{xml_path}: no valid <size> and no image to take the size from")
        try:
            width, height = image_size(image_path)
        except ImageError as exc:
            raise AnnotationError(f"{xml_path}: no valid <size>, and the image cannot be read: {exc}") from exc
        report.add("size_from_image", str(xml_path))
    return width, height


def parse_annotation(
    xml_path: str | os.PathLike,
    class_names: tuple[str, ...] | list[str],
    *,
    image_path: str | os.PathLike | None = None,
    strict: bool = False,
    skip_unknown: bool = False,
    report: ReadReport | None = None,
    unknown: dict[str, list[str]] | None = None,
) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Parse one VOC XML -> (width, height, boxes (K,4) float32 pixel xyxy, labels int64, difficult bool).

    See the module docstring for the frame and the bad-input rules. Unknown class names raise unless
    ``skip_unknown`` (then they are counted); when ``unknown`` is given they are collected there
    (name -> files) instead, so a caller can report every file at once.
    """
    xml_path = Path(xml_path)
    report = report if report is not None else ReadReport()
    index = {name: i for i, name in enumerate(class_names)}
    root = parse_xml(xml_path)
    if root.tag != "annotation":
        raise AnnotationError(f"{xml_path}: root element is <{root.tag}>, expected <annotation>")

    width, height = _annotated_size(root, xml_path, image_path, report)
    boxes: list[list[float]] = []
    labels: list[int] = []
    difficult: list[bool] = []
    for k, obj in enumerate(root.findall("object")):
        where = f"{xml_path} object {k}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            if strict:
                raise AnnotationError(f"{where}: missing <name>; give every object a class name")
            report.add("missing_name", where)
            continue
        if name not in index or name == BACKGROUND:
            if unknown is not None:
                unknown.setdefault(name, []).append(str(xml_path))
                continue
            if skip_unknown:
                report.add("unknown_class", f"{where} ({name!r})")
                continue
            raise AnnotationError(
                f"{where}: unknown class {name!r}; known classes are {list(class_names[1:])} "
                "(pass the dataset's class list, or skip_unknown=True to drop them)"
            )
        bnd = obj.find("bndbox")
        try:
            if bnd is None:
                raise ValueError("missing <bndbox>")
            coords = []
            for tag in ("xmin", "ymin", "xmax", "ymax"):
                try:
                    coords.append(_number(bnd.findtext(tag)))
                except ValueError as exc:
                    raise ValueError(f"<{tag}> {exc}") from exc
            is_difficult = _flag(obj.findtext("difficult"))
        except ValueError as exc:
            if strict:
                raise AnnotationError(f"{where} ({name}): malformed box: {exc}; fix the annotation") from exc
            report.add("malformed_box", f"{where}: {exc}")
            continue
        if obj.find("difficult") is None:
            report.add("difficult_defaulted", where)
        # 1-based VOC pixels -> the reference's 0-based frame (subtract 1 from all four), then clip.
        (cx1, cy1, cx2, cy2), clipped = clip_box((coords[0] - 1.0, coords[1] - 1.0, coords[2] - 1.0, coords[3] - 1.0), width, height)
        if clipped:
            report.add("clipped_box", where)
        if cx2 <= cx1 or cy2 <= cy1:
            if strict:
                raise AnnotationError(
                    f"{where} ({name}): degenerate box xmin={coords[0]} ymin={coords[1]} xmax={coords[2]} "
                    f"ymax={coords[3]} in a {width}x{height} image (empty after clipping); fix or remove it"
                )
            report.add("degenerate_box", where)
            continue
        boxes.append([cx1, cy1, cx2, cy2])
        labels.append(index[name])
        difficult.append(is_difficult)
    return (
        width,
        height,
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(labels, dtype=np.int64),
        np.asarray(difficult, dtype=bool),
    )


def read_voc_split(
    data: str | os.PathLike | Sequence[str | os.PathLike],
    split: str,
    class_names: tuple[str, ...] | list[str],
    *,
    strict: bool = False,
    skip_unknown: bool = False,
    report: ReadReport | None = None,
    warn: bool = True,
    max_images: int = 0,
) -> list[VOCRecord]:
    """Read every image of ``split`` of ``data``: the one reader of a split (training, every evaluation,
    calibration, deploy).

    ``data``: a VOC root, a VOCdevkit, a folder holding one, or a list of VOC roots (:func:`split_roots`
    finds the roots). Returns one :class:`VOCRecord` per id, in split-file order (roots in the order
    given); ``max_images`` > 0 keeps the first ``max_images`` of them (the whole split is still read and
    checked, so a bad file anywhere in it is reported whatever the count). Files are checked first
    (:func:`preflight`: one error lists every missing file). Unknown class names are collected over the
    whole split and raised together unless ``skip_unknown``. Lenient drops and defaults are counted in
    ``report`` and, if ``warn``, summarised in one warning.
    """
    roots = split_roots(data, split)
    names = check_class_names(class_names)
    report = report if report is not None else ReadReport()
    unknown: dict[str, list[str]] | None = None if skip_unknown else {}
    records = []
    for _, image_id, image_path, xml_path in preflight(roots, split):
        width, height, boxes, labels, difficult = parse_annotation(
            xml_path, names, image_path=image_path, strict=strict, skip_unknown=skip_unknown,
            report=report, unknown=unknown,
        )  # fmt: skip
        records.append(VOCRecord(image_id, image_path, xml_path, width, height, boxes, labels, difficult))
    return finish_split(records, split, names, report, unknown, warn=warn, max_images=max_images, what="VOC",
                        classes_hint="a classes.txt in the VOC root")


def _coordinate(value: float) -> str:
    """A VOC coordinate: an integral value as an int (``11``), others in full (``11.5``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def record_xml(record: VOCRecord, class_names: tuple[str, ...] | list[str], file_name: str) -> str:
    """The VOC annotation of ``record`` (the inverse of :func:`parse_annotation`: 1-based coordinates, each
    toolkit value + 1), ``<difficult>`` from the record (crowd regions included)."""
    from xml.sax.saxutils import escape

    parts = ["<annotation>", f"\t<filename>{escape(file_name)}</filename>",
             f"\t<size><width>{record.width}</width><height>{record.height}</height><depth>3</depth></size>"]
    for box, label, difficult in zip(record.boxes.tolist(), record.labels.tolist(), record.difficult.tolist()):
        coords = "".join(f"<{tag}>{_coordinate(v + 1.0)}</{tag}>" for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        parts.append(f"\t<object><name>{escape(class_names[label])}</name><difficult>{int(difficult)}</difficult>"
                     f"<bndbox>{coords}</bndbox></object>")
    return "\n".join([*parts, "</annotation>\n"])
