"""Torch-free YOLO (Ultralytics / Darknet text labels) reader and writer.

Layout (what ``ssd-train data --format yolo`` and ``ssd-train convert --to yolo`` write)::

    ROOT/data.yaml               names: [a, b, ...] (or {0: a, 1: b}); train: images/trainval; val: images/test
    ROOT/images/<split>/<id>.jpg
    ROOT/labels/<split>/<id>.txt one object a line: class cx cy w h (fractions of the image)

Without a ``data.yaml`` the names come from ``classes.txt``, ``obj.names`` or ``names.txt`` in ROOT
(one a line) and a split's images are ``ROOT/images/<split>`` (aliases as COCO's: ``trainval`` also
reads ``train``, ``test`` also ``val``/``valid``). A ``data.yaml`` split entry is a folder of images,
a ``.txt`` list of image paths, or a list of those, relative to ``path:`` (else to the YAML's folder);
Roboflow's ``../train/images`` is read as ``train/images`` when that is where the images are. The
YAML is read by a small parser of the subset these files use (``key: value`` lines, lists inline or
as ``- item`` lines, mappings ``0: name``), so PyYAML is not needed.

Records are those of :mod:`ssd_runtime.voc`, images in sorted path order, the image id the path below
the split's folder without its extension. A box ``cx cy w h`` is ``x1 = (cx - w/2) W``,
``x2 = (cx + w/2) W - 1`` in the toolkit's frame (0-based inclusive pixels, as COCO's), the size from
the image's header. YOLO cannot carry difficult flags or crowd regions (every object is trained and
evaluated) nor an image size. An image without a label file has no objects (YOLO's background
images); a split where no image has one is refused, as are class indices outside the names, files
leaving the root, an empty split and unreadable images; malformed lines and boxes outside the image
are dropped or clipped and counted (``strict=True`` makes them errors), naming the file and line.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ssd_runtime.errors import AnnotationError, DatasetError, ImageError
from ssd_runtime.images import image_size
from ssd_runtime.voc import BACKGROUND, ReadReport, VOCRecord, check_class_names, clip_box, finish_split

#: The dataset description file looked for first.
DATA_YAML = ("data.yaml", "data.yml", "dataset.yaml")
#: Class-name files read when there is no YAML (one name a line).
NAMES_FILES = ("classes.txt", "obj.names", "names.txt")
#: Image suffixes of a split folder (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: YAML split keys looked for, by toolkit split.
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {"trainval": ("trainval", "train"), "test": ("test", "val", "valid")}
#: Largest label file read, in bytes.
MAX_LABEL_BYTES = 4 * 1024 * 1024


# ----------------------------------------------------------------------------------------------
# data.yaml


def _scalar(text: str, where: str) -> Any:
    """A YAML scalar: quoted or plain string, int, float, true/false, null."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True"):
        return True
    if text in ("false", "False"):
        return False
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", text):
        return float(text)
    if text[0] in "[{&*!|>%@`":
        raise AnnotationError(f"{where}: {text!r} is YAML this reader does not parse; write plain values")
    return text


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _split_items(text: str) -> list[str]:
    """``a, 'b, c', d`` -> ['a', "'b, c'", 'd'] (commas inside quotes kept)."""
    items, current, quote = [], "", None
    for ch in text:
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        if ch == "," and quote is None:
            items.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        items.append(current)
    return items


def _flow(text: str, where: str) -> Any:
    """A one-line ``[a, b]`` list or ``{0: a, 1: b}`` mapping, or a scalar."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(item, where) for item in _split_items(text[1:-1])]
    if text.startswith("{") and text.endswith("}"):
        pairs = [item.split(":", 1) for item in _split_items(text[1:-1])]
        if any(len(p) != 2 for p in pairs):
            raise AnnotationError(f"{where}: cannot read the mapping {text!r}; write 'key: value' pairs")
        return {_scalar(k, where): _scalar(v, where) for k, v in pairs}
    return _scalar(text, where)


def parse_data_yaml(text: str, path: str | os.PathLike) -> dict[str, Any]:
    """The top-level keys of a YOLO ``data.yaml`` (the subset described in the module docstring)."""
    out: dict[str, Any] = {}
    key: str | None = None  # the key whose block (a "- item" list or "0: name" mapping) is being read
    for line_no, raw in enumerate(text.splitlines(), 1):
        where = f"{path}:{line_no}"
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        if line[0] not in " \t-":
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise AnnotationError(f"{where}: expected 'key: value', got {raw.strip()!r}")
            key = name.strip().strip("'\"")
            out[key] = _flow(value, where) if value.strip() else None
            continue
        item = line.strip()
        if key is None:
            raise AnnotationError(f"{where}: an indented line before any key: {raw.strip()!r}")
        if item.startswith("- ") or item == "-":
            if out[key] is None:
                out[key] = []
            if not isinstance(out[key], list):
                raise AnnotationError(f"{where}: a list item under {key!r}, which is not a list")
            out[key].append(_scalar(item[1:], where))
            continue
        name, sep, value = item.partition(":")
        if not sep:
            raise AnnotationError(f"{where}: expected '- item' or 'key: value' under {key!r}, got {item!r}")
        if out[key] is None:
            out[key] = {}
        if not isinstance(out[key], dict):
            raise AnnotationError(f"{where}: a mapping entry under {key!r}, which is not a mapping")
        out[key][_scalar(name, where)] = _scalar(value, where)
    return out


def data_yaml_text(class_names: tuple[str, ...] | list[str], splits: dict[str, str]) -> str:
    """A ``data.yaml`` naming the classes (background left out) and each split's image folder."""
    names = [n for n in class_names if n != BACKGROUND]
    lines = ["# written by ssd300-toolkit: a YOLO dataset (Ultralytics layout)", "path: ."]
    lines += [f"{key}: {folder}" for key, folder in splits.items()]
    lines += [f"nc: {len(names)}", "names:"] + [f"  {i}: {_yaml_string(n)}" for i, n in enumerate(names)]
    return "\n".join(lines) + "\n"


def _yaml_string(name: str) -> str:
    """``name`` quoted when plain YAML would read it as something else."""
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_ .\-/]*", name) and name.strip() == name
    plain = plain and name not in ("true", "false", "True", "False", "null", "Null", "NULL")
    return name if plain else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ----------------------------------------------------------------------------------------------
# Layout


def _yaml_path(root: Path) -> Path | None:
    for name in DATA_YAML:
        if (root / name).is_file():
            return root / name
    return None


def is_yolo_root(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a YOLO root (a ``data.yaml``, or ``images/`` beside ``labels/``)."""
    path = Path(path)
    return path.is_dir() and (_yaml_path(path) is not None or ((path / "images").is_dir() and (path / "labels").is_dir()))


def _read_yaml(root: Path) -> tuple[dict[str, Any], Path] | None:
    path = _yaml_path(root)
    if path is None:
        return None
    return parse_data_yaml(path.read_text(encoding="utf-8"), path), path


def yolo_classes(root: str | os.PathLike) -> tuple[tuple[str, ...], str]:
    """(class names, background first; the file they came from) of a YOLO root."""
    root = Path(root)
    found = _read_yaml(root)
    if found is not None:
        data, path = found
        raw = data.get("names")
        if isinstance(raw, dict):
            keys = sorted(raw)
            if keys != list(range(len(keys))):
                raise AnnotationError(f"{path}: 'names' keys must be 0..{len(keys) - 1}, got {keys}")
            raw = [raw[k] for k in keys]
        if not isinstance(raw, list) or not raw:
            raise AnnotationError(f"{path}: no 'names' list; write the class names (names: [a, b, ...])")
        names = [str(n).strip() for n in raw]
        if "nc" in data and data["nc"] != len(names):
            raise AnnotationError(f"{path}: nc is {data['nc']} but 'names' lists {len(names)} classes; make them agree")
    else:
        for file_name in NAMES_FILES:
            if (root / file_name).is_file():
                path = root / file_name
                names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
                break
        else:
            raise DatasetError(f"{root}: no class names: write a {DATA_YAML[0]} with 'names', or a {NAMES_FILES[0]}")
    bad = sorted({n for n in names if not n or n == BACKGROUND or names.count(n) > 1})
    if not names or bad:
        raise AnnotationError(f"{path}: class names must be non-empty, unique and not {BACKGROUND!r}: {bad or 'none given'}")
    return (BACKGROUND, *names), str(path)


def _inside(root: Path, relative: str, where: str) -> Path:
    """``root / relative`` when it stays inside ``root`` (Roboflow's leading ``../`` dropped when that finds it)."""
    rel = PurePosixPath(str(relative).replace("\\", "/"))
    if rel.is_absolute():
        raise AnnotationError(f"{where}: {relative!r} is an absolute path; give it relative to {root}")
    parts = rel.parts
    if ".." in parts:
        stripped = parts
        while stripped and stripped[0] == "..":
            stripped = stripped[1:]
        if ".." in stripped or not (root.joinpath(*stripped)).exists():
            raise AnnotationError(f"{where}: {relative!r} leaves the dataset root {root}; keep the files inside it")
        parts = stripped
    return root.joinpath(*parts)


def _images_of(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                  key=lambda p: p.relative_to(folder).as_posix())


def split_images(root: str | os.PathLike, split: str) -> list[tuple[str, Path]]:
    """(image id, image path) of every image of ``split`` of a YOLO root, in sorted path order."""
    root = Path(root)
    found = _read_yaml(root)
    aliases = SPLIT_ALIASES.get(split, (split,))
    if found is not None:
        data, yaml_path = found
        base = root
        if isinstance(data.get("path"), str) and data["path"] not in ("", "."):
            base = _inside(root, data["path"], f"{yaml_path} path")
        key = next((k for k in aliases if data.get(k)), None)
        if key is None:
            raise DatasetError(f"{yaml_path}: no entry for split {split!r} (looked for {', '.join(aliases)})")
        entries = data[key] if isinstance(data[key], list) else [data[key]]
        where = f"{yaml_path} {key}"
    else:
        base, where = root, f"{root}/images"
        key = next((k for k in aliases if (root / "images" / k).is_dir()), None)
        if key is None:
            raise DatasetError(f"{root}: no images for split {split!r}: expected images/<{'|'.join(aliases)}>/ or a data.yaml")
        entries = [f"images/{key}"]
    items: list[tuple[str, Path]] = []
    for entry in entries:
        source = _inside(base, str(entry), where)
        if source.is_dir():
            items += [(p.relative_to(source).with_suffix("").as_posix(), p) for p in _images_of(source)]
        elif source.is_file() and source.suffix == ".txt":
            for line_no, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    path = _inside(base, line.strip().removeprefix("./"), f"{source}:{line_no}")
                    items.append((path.relative_to(base).with_suffix("").as_posix(), path))
        else:
            raise DatasetError(f"{where}: {source} is neither a folder of images nor a .txt list of them")
    ids = [i for i, _ in items]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise AnnotationError(f"{where}: image ids {dupes} appear twice (same name, another extension?); remove the duplicates")
    if not items:
        raise DatasetError(f"{where}: split {split!r} has no images ({', '.join(IMAGE_SUFFIXES)}); add images or choose another split")
    return items


def label_path(image_path: Path) -> Path:
    """The label file of an image: its path with the last ``images`` folder replaced by ``labels``, suffix ``.txt``."""
    parts = list(image_path.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


# ----------------------------------------------------------------------------------------------
# Labels


def _parse_line(line: str) -> tuple[int, tuple[float, float, float, float]]:
    """``class cx cy w h`` -> (class index, fractions); ValueError when malformed."""
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields 'class cx cy w h', got {len(fields)}")
    if not re.fullmatch(r"\d+", fields[0]):
        raise ValueError(f"class {fields[0]!r} is not a non-negative integer")
    values = tuple(float(v) for v in fields[1:])
    if not all(math.isfinite(v) for v in values) or values[2] < 0 or values[3] < 0:
        raise ValueError(f"box {fields[1:]} is not finite, or has a negative size")
    return int(fields[0]), values  # type: ignore[return-value]


def parse_labels(
    path: Path, size: tuple[int, int], dataset_names: tuple[str, ...], index: dict[str, int], *, strict: bool,
    report: ReadReport, unknown: dict[str, list[str]] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One label file -> (boxes float32 (K, 4) pixel xyxy in the toolkit's frame, labels int64 (K,))."""
    width, height = size
    if path.stat().st_size > MAX_LABEL_BYTES:
        raise AnnotationError(f"{path}: label file is larger than {MAX_LABEL_BYTES} bytes; refused")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not a UTF-8 text file ({exc}); a label file holds 'class cx cy w h' lines") from exc
    boxes, labels = [], []
    for line_no, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{line_no}"
        if not line.strip():
            continue
        try:
            cls, (cx, cy, w, h) = _parse_line(line)
        except ValueError as exc:
            if strict:
                raise AnnotationError(f"{where}: malformed label line: {exc}; fix it") from exc
            report.add("malformed_box", f"{where}: {exc}")
            continue
        if cls >= len(dataset_names) - 1:
            raise AnnotationError(f"{where}: class {cls} but the dataset names {len(dataset_names) - 1} classes (0..{len(dataset_names) - 2})")
        name = dataset_names[cls + 1]
        if name not in index:
            if unknown is not None:
                unknown.setdefault(name, []).append(where)
            else:
                report.add("unknown_class", f"{where} ({name!r})")
            continue
        box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width - 1.0, (cy + h / 2) * height - 1.0)
        clipped, was_clipped = clip_box(box, width, height)
        if was_clipped:
            report.add("clipped_box", where)
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            if strict:
                raise AnnotationError(f"{where} ({name}): degenerate box {line.split()[1:]} in a {width}x{height} image; fix or remove it")
            report.add("degenerate_box", where)
            continue
        boxes.append(clipped)
        labels.append(index[name])
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64)


def read_yolo_split(
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
    """Read every image of ``split`` of the YOLO root ``data`` (module docstring: frame, refusals), as
    :func:`ssd_runtime.voc.read_voc_split` reads VOC; class names of the dataset are mapped to
    ``class_names`` by name."""
    names = check_class_names(class_names)
    report = report if report is not None else ReadReport()
    root = Path(data)
    dataset_names, _ = yolo_classes(root)
    index = {name: i for i, name in enumerate(names) if i}
    unknown: dict[str, list[str]] | None = None if skip_unknown else {}
    records = []
    labelled = 0
    items = split_images(root, split)
    for image_id, image_path in items:
        try:
            size = image_size(image_path)
        except ImageError as exc:
            raise AnnotationError(f"{image_path}: YOLO labels are fractions of the image size, and the image cannot be read: {exc}") from exc
        labels_file = label_path(image_path)
        if labels_file.is_file():
            labelled += 1
            boxes, labels = parse_labels(labels_file, size, dataset_names, index, strict=strict, report=report, unknown=unknown)
        else:
            boxes, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        records.append(VOCRecord(image_id, image_path, labels_file, size[0], size[1], boxes, labels,
                                 np.zeros(labels.shape[0], dtype=bool)))
    if not labelled:
        raise DatasetError(f"split {split!r} of {root}: no image has a label file (e.g. {label_path(items[0][1])}); "
                           "labels/ must mirror images/")
    return finish_split(records, split, names, report, unknown, warn=warn, max_images=max_images, what="YOLO",
                        classes_hint="the names of the data.yaml")


def label_text(record: VOCRecord) -> str:
    """The label file of ``record`` (``class cx cy w h`` a line, the inverse of the reader's frame; class is label - 1)."""
    lines = []
    for (x1, y1, x2, y2), label in zip(record.boxes.tolist(), record.labels.tolist()):
        w, h = (x2 - x1 + 1.0) / record.width, (y2 - y1 + 1.0) / record.height
        cx, cy = (x1 + x2 + 1.0) / 2.0 / record.width, (y1 + y2 + 1.0) / 2.0 / record.height
        lines.append(f"{label - 1} {cx!r} {cy!r} {w!r} {h!r}")
    return "".join(f"{line}\n" for line in lines)
