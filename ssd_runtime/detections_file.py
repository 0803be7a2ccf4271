"""The detections file: one JSON line per image, appended batch by batch, resumable, merged from parts.

::

    {"format": "ssd300-detections", "schema_version": 1, "model_sha256": "...", "settings": {...}, ...}   <- header
    {"index": 0, "id": "000001", "width": 500, "height": 375, "boxes": [[x1, y1, x2, y2], ...],
     "labels": [3, ...], "scores": [0.93, ...]}                                                  <- one per image

- The header (written atomically: the file never exists without it) names the run: the model file's
  sha256, class names, postprocess settings, precision, batch size and the image list (count and sha256
  of its ids). A resumed run, and every part merged with another, must agree on those (:data:`RUN_KEYS`).
- Each image's line holds its index in the image list, its id, the decoded image's size and its
  detections: boxes are fractional xyxy (multiply by width and height for pixels), labels index
  ``class_names``. Floats are the float32 values written as the shortest decimal that reads back as the
  same double, so reading a file gives the detections bit for bit (the merged mAP is the same number).
- The header is stamped and checked by :data:`ssd_runtime.formats.DETECTIONS` (a wrong format or a newer
  version raises :class:`~ssd_runtime.errors.FormatError`); files written before ``schema_version`` spell
  it ``version`` and still load.
- Lines are appended per batch (one write, flushed and fsync'd). A crash can leave the last line torn:
  readers drop it, and ``--resume`` truncates it away before appending.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ssd_runtime.detections import Detections
from ssd_runtime.fileio import atomic_write_bytes
from ssd_runtime.formats import DETECTIONS
from ssd_runtime.sharding import Shard, shard_range

__all__ = [
    "FORMAT", "RUN_KEYS", "DetectionsFileError", "DetectionsHeader", "DetectionsWriter", "ImageRecord",
    "image_list_sha256", "read_detections", "read_header", "read_parts",
]  # fmt: skip

FORMAT = DETECTIONS.name
VERSION = DETECTIONS.version
#: Header fields that make two files one run: a resume must match them, and so must merged parts.
RUN_KEYS = ("model_sha256", "class_names", "settings", "precision", "batch_size", "num_images", "image_list_sha256")


class DetectionsFileError(ValueError):
    """A detections file is malformed, belongs to another run, or parts do not add up to the image list."""


def image_list_sha256(ids: Iterable[str]) -> str:
    """sha256 of the image ids in order (one per line): names the image list a file was made from."""
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DetectionsHeader:
    """What a detections file was made from. ``source``: facts for reports (model path, data, backend)."""

    model_sha256: str
    class_names: tuple[str, ...]
    settings: dict[str, Any]
    precision: str
    batch_size: int
    num_images: int
    image_list_sha256: str
    shard: tuple[int, int] = (0, 1)
    source: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return DETECTIONS.stamp({**asdict(self), "class_names": list(self.class_names), "shard": list(self.shard)})

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> DetectionsHeader:
        DETECTIONS.check(data, where)  # FormatError; files before schema_version spelled it "version"
        try:
            return cls(data["model_sha256"], tuple(data["class_names"]), dict(data["settings"]), data["precision"],
                       int(data["batch_size"]), int(data["num_images"]), data["image_list_sha256"],
                       tuple(data["shard"]), data.get("source"))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectionsFileError(f"{where}: malformed header ({exc!r}); the file is not usable") from exc

    def differences(self, other: DetectionsHeader) -> list[str]:
        """The :data:`RUN_KEYS` on which ``other`` differs, as ``key: mine vs theirs`` lines."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{key}: {mine[key]!r} vs {theirs[key]!r}" for key in RUN_KEYS if mine[key] != theirs[key]]


@dataclass(frozen=True)
class ImageRecord:
    """One image's line: ``index`` in the image list, ``image_id``, decoded ``width`` x ``height``, detections
    (fractional boxes)."""

    index: int
    image_id: str
    width: int
    height: int
    detections: Detections

    def to_line(self) -> bytes:
        d = self.detections
        # float32 -> Python float is exact; json writes the shortest repr that reads back as that double
        entry = {"index": self.index, "id": self.image_id, "width": self.width, "height": self.height,
                 "boxes": d.boxes.tolist(), "labels": d.labels.tolist(), "scores": d.scores.tolist()}
        return (json.dumps(entry, separators=(",", ":")) + "\n").encode("utf-8")

    @classmethod
    def from_line(cls, line: bytes, where: str) -> ImageRecord:
        if not line.endswith(b"\n"):
            raise DetectionsFileError(f"{where}: line not terminated (torn by an interrupted write)")
        try:
            e = json.loads(line)
            boxes = np.asarray(e["boxes"], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(e["labels"], dtype=np.int64).reshape(-1)
            scores = np.asarray(e["scores"], dtype=np.float32).reshape(-1)
            if not len(boxes) == len(labels) == len(scores):
                raise ValueError(f"{len(boxes)} boxes, {len(labels)} labels, {len(scores)} scores")
            return cls(int(e["index"]), str(e["id"]), int(e["width"]), int(e["height"]), Detections(boxes, labels, scores))
        except (KeyError, TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            raise DetectionsFileError(f"{where}: malformed image line ({exc})") from exc


def _open(path: Path) -> BinaryIO:
    if not path.is_file():
        raise FileNotFoundError(f"detections file not found: {path}")
    return open(path, "rb")


def _header(line: bytes, path: Path) -> DetectionsHeader:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise DetectionsFileError(f"{path}: line 1 is not a detections header ({exc})") from exc
    if not isinstance(data, dict):
        raise DetectionsFileError(f"{path}: line 1 is not a detections header")
    return DetectionsHeader.from_dict(data, str(path))


def read_header(path: str | os.PathLike) -> DetectionsHeader:
    """The header of a detections file (its first line only)."""
    with _open(Path(path)) as f:
        return _header(f.readline(), Path(path))


def _scan(path: Path, on_record: Callable[[ImageRecord], None]) -> tuple[DetectionsHeader, int, bool]:
    """Read ``path`` line by line, calling ``on_record`` per image line.

    Returns (header, bytes of the complete lines, whether a torn last line was dropped). Only the last
    line may be bad (an interrupted append); a bad line before it is an error.
    """
    with _open(path) as f:
        first = f.readline()
        header = _header(first, path)
        good = len(first)
        pending: tuple[int, bytes] | None = None  # a line is judged only once we know whether it is the last
        for line_no, line in enumerate(f, 2):
            if pending is not None:
                on_record(ImageRecord.from_line(pending[1], f"{path}:{pending[0]}"))
                good += len(pending[1])
            pending = (line_no, line)
        if pending is None:
            return header, good, False
        try:
            record = ImageRecord.from_line(pending[1], f"{path}:{pending[0]}")
        except DetectionsFileError:
            return header, good, True
        on_record(record)
        return header, good + len(pending[1]), False


def read_detections(path: str | os.PathLike) -> tuple[DetectionsHeader, list[ImageRecord]]:
    """Header and image records of one file, in file order (a torn last line dropped)."""
    records: list[ImageRecord] = []
    header, _, _ = _scan(Path(path), records.append)
    return header, records


class DetectionsWriter:
    """Appends image records to ``path``, a batch per :meth:`write` (flushed and fsync'd).

    A new file starts with ``header``. An existing one is refused unless ``resume``: then its header
    must match ``header`` on :data:`RUN_KEYS` and its shard, a torn last line is cut off, and
    :attr:`done` holds the indices already written (the caller skips them).
    """

    def __init__(self, path: str | os.PathLike, header: DetectionsHeader, *, resume: bool = False) -> None:
        self.path = Path(path)
        self.done: set[int] = set()
        self.torn = False
        if self.path.exists():
            if not resume:
                raise DetectionsFileError(f"{self.path} exists: pass --resume to continue it, or choose another "
                                          "output (or remove it)")
            old, good, self.torn = _scan(self.path, lambda r: self.done.add(r.index))
            diff = old.differences(header) + ([f"shard: {old.shard} vs {header.shard}"] if old.shard != header.shard else [])
            if diff:
                raise DetectionsFileError(f"{self.path} was written by another run, refusing to resume it:\n  "
                                          + "\n  ".join(diff) + "\n(file vs this run); choose another output")
            if self.torn:
                os.truncate(self.path, good)
        else:
            atomic_write_bytes(self.path, (json.dumps(header.to_dict()) + "\n").encode("utf-8"))
        self._file = open(self.path, "ab")

    def write(self, records: Sequence[ImageRecord]) -> None:
        self._file.write(b"".join(r.to_line() for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())  # a batch acknowledged is a batch a resume will not redo

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DetectionsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ranges(indices: Sequence[int]) -> str:
    """Sorted ints -> ``"3, 8-11"`` (at most 10 runs shown)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:10])
    return text + (f", ... ({len(runs) - 10} more runs)" if len(runs) > 10 else "")


def read_parts(paths: Sequence[str | os.PathLike]) -> tuple[DetectionsHeader, list[ImageRecord]]:
    """Merge the parts of one run (or one whole file): records of every image in image-list order.

    The parts must agree on :data:`RUN_KEYS`, hold no image twice and together cover the whole list;
    otherwise a :class:`DetectionsFileError` says which images are missing and which shard owes them.
    """
    if not paths:
        raise DetectionsFileError("no detections files given")
    first = read_header(paths[0])
    owner: dict[int, str] = {}
    records: list[ImageRecord] = []
    for path in paths:
        header, part = read_detections(path)
        if diff := first.differences(header):
            raise DetectionsFileError(f"{path} and {paths[0]} are not parts of one run:\n  " + "\n  ".join(diff))
        for record in part:
            if not 0 <= record.index < header.num_images:
                raise DetectionsFileError(f"{path}: image index {record.index} outside the list of {header.num_images}")
            if record.index in owner:
                raise DetectionsFileError(f"image {record.index} ({record.image_id}) is in both {owner[record.index]} "
                                          f"and {path}: pass each part once")
            owner[record.index] = str(path)
        records.extend(part)
    if len(owner) != first.num_images:
        missing = sorted(set(range(first.num_images)) - owner.keys())
        count = first.shard[1]
        owed = [str(i) for i in range(count)
                if set(shard_range(first.num_images, first.batch_size, Shard(i, count))) & set(missing)]
        raise DetectionsFileError(
            f"{len(missing)} of {first.num_images} images have no detections (indices {_ranges(missing)}): "
            f"shard(s) {', '.join(owed)} of {count} not given or not finished; pass every part, and finish an "
            "interrupted one with --resume"
        )
    records.sort(key=lambda r: r.index)
    return first, records
