"""Check every image of a dataset before a long run: all unreadable files in one report, cached.

A corrupt image otherwise surfaces hours into training, inside a DataLoader worker. :func:`check_images`
runs :func:`ssd_runtime.images.verify_image` on every file first - ``"quick"`` (header, pixel limit and
the file's completeness, no pixels decoded) or ``"full"`` (a complete decode) - and returns an
:class:`ImageCheckReport` listing every bad file with its reason. Verdicts are cached by
(path, file size, mtime) in a JSON file (:data:`ssd_runtime.formats.IMAGE_CHECK_CACHE`), written
atomically, so a rerun on unchanged files only stats them. :func:`check_records` applies the check to
VOC records: it raises one :class:`BadImagesError` naming every bad file, or, with ``skip_bad=True``,
drops them with one counted warning. The measured cost is in ``BENCHMARKS.md`` ("Image check before training").
"""
from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ssd_runtime.errors import ImageError
from ssd_runtime.fileio import atomic_write_bytes
from ssd_runtime.formats import IMAGE_CHECK_CACHE
from ssd_runtime.images import MAX_PIXELS, verify_image
from ssd_runtime.voc import VOCRecord

#: ``"quick"``: header + completeness, no pixels decoded; ``"full"``: decode every image.
CHECK_MODES = ("quick", "full")
#: Default name of the cache file (``ssd-train fit`` keeps it in the run folder).
CACHE_FILE = "image-check.json"
#: Bumped (in the format's record) when the checks change, so older verdicts are not trusted.
CACHE_VERSION = IMAGE_CHECK_CACHE.version


@dataclass
class ImageCheckReport:
    """What :func:`check_images` found.

    checked: images checked (from the cache or not).
    bad: (path, reason) for each image that would fail to load, in input order.
    mismatched: (path, reason) for readable images whose upright size differs from the expected one
        (the annotation's ``<size>``); training clips their boxes to the image.
    seconds: wall time of the whole check, cache reading and writing included.
    cached: how many verdicts came from the cache (equal to ``checked`` on a rerun over unchanged files).
    mode: ``"quick"`` or ``"full"`` (:data:`CHECK_MODES`).
    cache_path: the cache file used, if any.
    """

    checked: int
    bad: list[tuple[Path, str]]
    seconds: float
    cached: int
    mode: str = "quick"
    mismatched: list[tuple[Path, str]] = field(default_factory=list)
    cache_path: Path | None = None

    @property
    def images_per_s(self) -> float:
        return self.checked / max(self.seconds, 1e-9)

    def to_dict(self) -> dict:
        return {
            "checked": self.checked, "bad": [[str(p), r] for p, r in self.bad],
            "mismatched": [[str(p), r] for p, r in self.mismatched], "seconds": round(self.seconds, 4),
            "cached": self.cached, "mode": self.mode, "cache_path": str(self.cache_path) if self.cache_path else None,
        }  # fmt: skip


class BadImagesError(ImageError):
    """Some images of a dataset cannot be read; the message lists every one and says what to do.

    ``report`` is the :class:`ImageCheckReport` (None when the error was re-created from its message,
    e.g. by a DataLoader worker).
    """

    def __init__(self, message: str, report: ImageCheckReport | None = None) -> None:
        super().__init__(message)
        self.report = report

    @classmethod
    def from_report(cls, report: ImageCheckReport, *, what: str = "the dataset") -> BadImagesError:
        lines = "\n".join(f"  {path}: {reason}" for path, reason in report.bad)
        return cls(
            f"{len(report.bad)} of {report.checked} images of {what} cannot be read ({report.mode} image check):\n"
            f"{lines}\nfix or remove them (and their ids from ImageSets/Main/*.txt), or pass --skip-bad-images "
            "(skip_bad_images=True) to train on the others",
            report,
        )


def check_images(
    paths: Sequence[str | os.PathLike],
    *,
    expected_sizes: Sequence[tuple[int, int]] | None = None,
    mode: str = "quick",
    cache_path: str | os.PathLike | None = None,
    update_cache: bool = True,
    max_pixels: int = MAX_PIXELS,
    workers: int = 1,
) -> ImageCheckReport:
    """Check that every image of ``paths`` loads; see the module docstring.

    expected_sizes: (width, height) per path (e.g. the annotations' ``<size>``); readable images of
        another upright size are listed in ``mismatched``.
    mode: ``"quick"`` or ``"full"`` (:data:`CHECK_MODES`).
    cache_path: JSON cache of verdicts keyed by (absolute path, size, mtime_ns) and the mode; ``None``
        checks every file. It is rewritten atomically when something new was checked and
        ``update_cache`` (a corrupt or outdated cache is ignored, never an error).
    workers: threads checking files at once (helps on slow disks and for ``"full"``).
    """
    if mode not in CHECK_MODES:
        raise ValueError(f"mode must be one of {CHECK_MODES}, got {mode!r}")
    if expected_sizes is not None and len(expected_sizes) != len(paths):
        raise ValueError(f"expected_sizes has {len(expected_sizes)} entries for {len(paths)} paths")
    start = time.perf_counter()
    settings = {"mode": mode, "max_pixels": max_pixels}
    entries = _read_cache(Path(cache_path), settings) if cache_path is not None else {}
    keys = [os.path.abspath(p) for p in paths]
    stats = [_stat(key) for key in keys]
    # verdict per path: (width, height, reason); reason None when the image is good
    verdicts: list[tuple[int, int, str | None] | None] = [None] * len(keys)
    todo = []
    for i, (key, stat) in enumerate(zip(keys, stats)):
        entry = entries.get(key)
        if stat is not None and entry is not None and entry[:2] == list(stat):
            verdicts[i] = (entry[2], entry[3], entry[4])
        else:
            todo.append(i)
    cached = len(keys) - len(todo)

    def verify(i: int) -> tuple[int, int, str | None]:
        return _verify(keys[i], mode == "full", max_pixels)

    if workers > 1 and len(todo) > 1:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(verify, todo))
    else:
        results = [verify(i) for i in todo]
    for i, verdict in zip(todo, results):
        verdicts[i] = verdict
        if stats[i] is not None:
            entries[keys[i]] = [*stats[i], *verdict]

    bad, mismatched = [], []
    for i, (width, height, reason) in enumerate(verdicts):
        path = Path(paths[i])
        if reason is not None:
            bad.append((path, reason))
        elif expected_sizes is not None and tuple(expected_sizes[i]) != (width, height):
            w, h = expected_sizes[i]
            mismatched.append((path, f"the annotation says {w}x{h}, the image is {width}x{height}"))
    if cache_path is not None and update_cache and todo:
        payload = IMAGE_CHECK_CACHE.stamp({**settings, "entries": entries})
        atomic_write_bytes(cache_path, json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    return ImageCheckReport(
        checked=len(keys), bad=bad, seconds=time.perf_counter() - start, cached=cached, mode=mode,
        mismatched=mismatched, cache_path=Path(cache_path) if cache_path is not None else None,
    )  # fmt: skip


def check_records(
    records: Sequence[VOCRecord], *, skip_bad: bool = False, what: str = "the dataset", **check_kwargs
) -> tuple[list[VOCRecord], ImageCheckReport]:
    """Check the images of VOC ``records`` (:func:`check_images`, sizes against the annotations).

    Returns the records to use and the report. Bad images raise one :class:`BadImagesError` listing
    all of them; with ``skip_bad`` they are dropped with one warning that counts them (an error
    still when none is left). Size mismatches are summarised in one warning.
    """
    report = check_images(
        [r.image_path for r in records], expected_sizes=[(r.width, r.height) for r in records], **check_kwargs
    )
    if report.mismatched:
        examples = "; ".join(f"{p}: {r}" for p, r in report.mismatched[:3])
        warnings.warn(
            f"{len(report.mismatched)} of {report.checked} images of {what} differ in size from their annotation "
            f"(boxes are clipped to the image), e.g. {examples}",
            stacklevel=2,
        )
    if not report.bad:
        return list(records), report
    if not skip_bad or len(report.bad) == len(records):
        raise BadImagesError.from_report(report, what=what)
    bad_paths = {p for p, _ in report.bad}
    kept = [r for r in records if Path(r.image_path) not in bad_paths]
    shown = "; ".join(f"{p}: {r}" for p, r in report.bad[:5])
    more = f"; ... and {len(report.bad) - 5} more" if len(report.bad) > 5 else ""
    warnings.warn(
        f"skipping {len(report.bad)} of {report.checked} images of {what} that cannot be read "
        f"(--skip-bad-images); training on the other {len(kept)}: {shown}{more}",
        stacklevel=2,
    )
    return kept, report


def _stat(path: str) -> tuple[int, int] | None:
    """(size in bytes, mtime in ns) of ``path``, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _verify(path: str, decode: bool, max_pixels: int) -> tuple[int, int, str | None]:
    """(width, height, None) for a good image, (0, 0, reason) for a bad one; the reason omits the path."""
    try:
        width, height = verify_image(path, decode=decode, max_pixels=max_pixels)
    except FileNotFoundError:
        return 0, 0, "file not found; restore it or remove its id from the split file"
    except (ImageError, OSError) as exc:
        reason = str(exc)
        return 0, 0, reason[len(path) + 2 :] if reason.startswith(f"{path}: ") else reason
    return width, height, None


def _read_cache(path: Path, settings: dict) -> dict[str, list]:
    """The cache's entries when it was written with the same ``settings``; else (unreadable, of another
    format or version: a cache is rebuilt, never an error) empty."""
    try:
        data = json.loads(path.read_bytes())
        IMAGE_CHECK_CACHE.check(data, str(path))  # caches before the stamp: "version" 1, no name
    except (OSError, ValueError):  # FormatError is a ValueError
        return {}
    if any(data.get(k) != v for k, v in settings.items()):
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}
