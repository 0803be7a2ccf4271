"""The training split as ``ssd-train fit`` reads it: the class list and its source, then every image checked.

Before a long run :func:`load_training_set` says which classes it trains and where they came from
(``--classes``, the root's ``classes.txt``, a COCO file's categories, a YOLO data.yaml's names, the Pascal VOC
names, or inferred from the annotations -
with a warning for inferred names that are not VOC names: :func:`ssd_runtime.datasets.dataset_classes`),
reads the split, and checks every image (:mod:`ssd_runtime.image_check`, cached in the run folder), so
a corrupt image is reported at once, with every other one, instead of hours in.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ssd_runtime.classes import ANNOTATIONS_SOURCE, VOC_SOURCE
from ssd_runtime.datasets import dataset_classes
from ssd_runtime.image_check import CHECK_MODES, ImageCheckReport, check_records
from ssd_runtime.voc import BACKGROUND
from ssd_train.data import VOCDetection
from ssd_train.run_log import stderr_note

#: ``check_images`` values: the modes of :data:`ssd_runtime.image_check.CHECK_MODES`, or "off".
IMAGE_CHECKS = (*CHECK_MODES, "off")
#: Class source when the caller gives the names (``--classes``).
GIVEN_SOURCE = "given"


@dataclass
class TrainingSetReport:
    """What :func:`load_training_set` found.

    class_names: background first. class_source: :data:`GIVEN_SOURCE`, a ``classes.txt`` path,
    ``"voc"`` or ``"annotations"``. image_check: None when the check was off.
    """

    class_names: tuple[str, ...]
    class_source: str
    image_check: ImageCheckReport | None

    def to_dict(self) -> dict:
        return {
            "classes": list(self.class_names[1:]), "class_source": self.class_source,
            "image_check": self.image_check.to_dict() if self.image_check is not None else None,
        }  # fmt: skip


def describe_classes(class_names: tuple[str, ...], source: str) -> str:
    """One line naming the classes (background left out) and where they came from."""
    names = ", ".join(class_names[1:])
    count = len(class_names) - 1
    if source == GIVEN_SOURCE:
        return f"training {count} classes given by --classes: {names}"
    if source == VOC_SOURCE:
        return f"training the {count} Pascal VOC classes (every object name in the annotations is one): {names}"
    if source == ANNOTATIONS_SOURCE:
        return f"training {count} classes inferred from the annotations: {names}"
    return f"training {count} classes from {source}: {names}"


def load_training_set(
    data: str | os.PathLike | list[str | os.PathLike],
    *,
    classes: list[str] | None = None,
    skip_unknown_classes: bool = False,
    check_images: str = "quick",
    skip_bad_images: bool = False,
    cache_path: str | os.PathLike | None = None,
    update_cache: bool = True,
    check_workers: int = 2,
    note: Callable[[str], None] | None = stderr_note,
    **dataset_kwargs,
) -> tuple[VOCDetection, TrainingSetReport]:
    """The ``trainval`` split of ``data`` as a training :class:`~ssd_train.data.VOCDetection`, checked.

    classes: names without background (``None``: the dataset's own, :func:`ssd_runtime.classes.dataset_classes`).
    check_images: "quick", "full" or "off" (:data:`IMAGE_CHECKS`); unreadable images raise one
        :class:`~ssd_runtime.image_check.BadImagesError` listing all of them, unless ``skip_bad_images``
        (then they are left out with one counted warning, and an image that still fails to decode
        during training is skipped too).
    cache_path: the check's cache file (``ssd-train fit``: ``OUT/image-check.json``); ``update_cache``
        False reads it without writing (processes other than rank 0).
    note: where the one-line summaries of the classes and of the check go (stderr; None: nowhere).
    dataset_kwargs: passed to :class:`~ssd_train.data.VOCDetection` (seed, augment, ...).
    """
    if check_images not in IMAGE_CHECKS:
        raise ValueError(f"check_images must be one of {IMAGE_CHECKS}, got {check_images!r}")
    split = "trainval"
    if classes is not None:
        class_names, source = (BACKGROUND, *[c for c in classes if c != BACKGROUND]), GIVEN_SOURCE
    else:
        class_names, source = dataset_classes(data, split)
    if note is not None:
        note(describe_classes(class_names, source))
    train_set = VOCDetection.from_voc(
        data, split, class_names=class_names, train=True, skip_unknown=skip_unknown_classes,
        on_bad_image="skip" if skip_bad_images else "error", **dataset_kwargs,
    )  # fmt: skip
    report = None
    if check_images != "off":
        train_set.records, report = check_records(
            train_set.records, skip_bad=skip_bad_images, what=f"split {split!r}", mode=check_images,
            cache_path=cache_path, update_cache=update_cache, workers=check_workers,
        )  # fmt: skip
        if note is not None:
            cached = f", {report.cached} from the cache {report.cache_path}" if report.cached else ""
            skipped = f"; skipped {len(report.bad)} unreadable" if report.bad else ""
            note(f"checked {report.checked} images ({report.mode}{cached}) in {report.seconds:.2f} s{skipped}")
    return train_set, TrainingSetReport(tuple(class_names), source, report)

