"""Class lists of a VOC dataset: ``classes.txt``, the Pascal VOC classes, or names inferred from the XML.

Index 0 is always ``background``; a ``classes.txt`` lists the other names, one per line.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from ssd_runtime.errors import AnnotationError
from ssd_runtime.voc import BACKGROUND, parse_xml, preflight, split_roots

#: Name of the optional class-list file in a VOC root (one name per line, background not listed).
CLASSES_FILE = "classes.txt"


def read_class_file(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names of a ``classes.txt`` (one per line), with ``background`` prepended at index 0."""
    path = Path(path)
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if names and names[0] == BACKGROUND:
        names = names[1:]
    if not names:
        raise AnnotationError(f"{path}: class list is empty; write one class name per line")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise AnnotationError(f"{path}: duplicate class names {dupes}")
    return (BACKGROUND, *names)


def write_class_file(path: str | os.PathLike, class_names: tuple[str, ...] | list[str]) -> None:
    """Write a ``classes.txt`` (background, at index 0, is not written)."""
    names = [n for n in class_names if n != BACKGROUND]
    Path(path).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")


def dataset_class_names(roots: list[Path] | str | os.PathLike, split: str = "trainval") -> tuple[str, ...]:
    """The class list of a dataset, background first (:func:`dataset_classes` without its source or warning).

    The first root's ``classes.txt`` if there is one; otherwise the Pascal VOC classes when every
    object name of the split is one of them, otherwise the sorted names found in the split's XML.
    """
    return dataset_classes(roots, split, warn=False)[0]


#: Sources of an inferred class list (:func:`dataset_classes`); a ``classes.txt`` source is its path.
VOC_SOURCE, ANNOTATIONS_SOURCE = "voc", "annotations"


def dataset_classes(
    roots: list[Path] | str | os.PathLike, split: str = "trainval", *, warn: bool = True
) -> tuple[tuple[str, ...], str]:
    """(class names, background first; where they came from) of a dataset.

    ``roots``: VOC roots, or one path for :func:`split_roots`. The names come from the first root's
    ``classes.txt`` (source: that file's path); else they are the Pascal VOC classes when every object
    name of the split is one (source :data:`VOC_SOURCE`); else the sorted names found in the split's
    XML (source :data:`ANNOTATIONS_SOURCE`). Inferred names that are not Pascal VOC names are warned
    about when ``warn`` (with the closest VOC name and a file using each), so a typo such as
    ``persn`` is not silently trained as a class of its own.
    """
    import difflib

    from ssd_runtime.spec import VOC_CLASSES

    roots = split_roots(roots, split)
    for root in roots:
        if (root / CLASSES_FILE).is_file():
            return read_class_file(root / CLASSES_FILE), str(root / CLASSES_FILE)
    files_by_name: dict[str, list[str]] = {}
    for _, _, _, xml_path in preflight(roots, split):
        root_el = parse_xml(xml_path)
        for obj in root_el.findall("object"):
            name = (obj.findtext("name") or "").strip()
            if name:
                files_by_name.setdefault(name, []).append(xml_path.name)
    if not files_by_name:
        raise AnnotationError(f"split {split!r} of {[str(r) for r in roots]}: no object names found; write a {CLASSES_FILE}")
    voc_names = VOC_CLASSES[1:]
    others = sorted(set(files_by_name) - set(voc_names))
    if not others:
        return VOC_CLASSES, VOC_SOURCE
    if warn:
        described = []
        for name in others[:20]:
            close = difflib.get_close_matches(name, voc_names, n=1, cutoff=0.75)
            hint = f", did you mean {close[0]!r}?" if close else ""
            files = files_by_name[name]
            described.append(f"{name} ({len(files)} object(s), e.g. {files[0]}{hint})")
        more = f", ... and {len(others) - 20} more" if len(others) > 20 else ""
        warnings.warn(
            f"classes inferred from the annotations of split {split!r}; not Pascal VOC names: "
            f"{', '.join(described)}{more} - if these are typos fix the XML, else write {CLASSES_FILE} in the "
            "VOC root (one name per line) to make them explicit",
            stacklevel=2,
        )
    return (BACKGROUND, *sorted(files_by_name)), ANNOTATIONS_SOURCE
