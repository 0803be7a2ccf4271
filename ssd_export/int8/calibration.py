"""Calibration sets for INT8: a hashed, class-balanced, deterministic choice of images of a dataset split
(Pascal VOC, COCO or YOLO: :mod:`ssd_runtime.datasets`).

A calibration set is a JSON manifest (kept in the repository's ``calibration/`` folder) naming the
images by path relative to the dataset root, with each file's sha256, the dataset it came from, the
class list, the selection rule and seed, and the preprocessing of the model it was made for. The
images stay in the dataset; :class:`CalibrationSet` finds them again (``data_root=`` when the
dataset has moved), re-hashes them (:meth:`CalibrationSet.verify`) and reads them through the
runtime's own :func:`ssd_runtime.preprocess.preprocess`, so INT8 calibration sees exactly the
input the deployed model sees.

Selection (:func:`select_images`): every image gets a seeded sort key, the sha256 of
``"<seed>:<relative path>"``. Classes take turns, rarest first (fewest images containing them in the
split); on its turn a class takes the first not-yet-chosen image containing it in key order, until
the count is reached or every class has run out; images without objects fill what is left, in key
order. Every class present in the split is therefore in any set of at least as many images as there
are classes, and the same dataset, split, count and seed give a byte-identical manifest (it holds no
timestamp).

No torch import: ``--model`` files are read through the runtime's backend registry.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ssd_runtime.datasets import dataset_classes, detect_format, read_split
from ssd_runtime.fileio import atomic_write_bytes, sha256_file
from ssd_runtime.formats import CALIBRATION_MANIFEST
from ssd_runtime.preprocess import INPUT_KINDS, preprocess
from ssd_runtime.spec import ModelSpec
from ssd_runtime.voc import VOCRecord, split_roots

__all__ = [
    "CALIBRATION_IMAGES",
    "CalibrationError",
    "CalibrationSet",
    "CalibrationWarning",
    "DEFAULT_BATCH",
    "MANIFEST_FORMAT",
    "MIN_IMAGES",
    "SCHEMA_VERSION",
    "SELECTION_RULE",
    "build_manifest",
    "model_input",
    "select_images",
    "write_manifest",
]

#: Images per calibration set: NVIDIA's guidance is at least 500 for CNNs.
CALIBRATION_IMAGES = 500
#: Images per calibration batch (:meth:`CalibrationSet.batches`); a set needs at least one batch.
DEFAULT_BATCH = 8
MIN_IMAGES = DEFAULT_BATCH
MANIFEST_FORMAT = CALIBRATION_MANIFEST.name
SCHEMA_VERSION = CALIBRATION_MANIFEST.version
#: Name of the selection rule recorded in manifests (see the module docstring).
SELECTION_RULE = "class-balanced-round-robin"
_SELECTION_DESCRIPTION = (
    "sort key sha256('<seed>:<relative path>'); classes take turns, rarest first, each taking the first "
    "not-yet-chosen image containing it in key order; images without objects fill the rest in key order"
)
#: The file ``ssd-train data`` writes beside a generated dataset (its seed, size, generator version).
_GENERATED_INFO = "dataset.json"


class CalibrationError(ValueError):
    """A calibration set cannot be built or used: too few images, changed files, another class list."""


class CalibrationWarning(UserWarning):
    """A calibration set has fewer images than asked for, or than the recommended 500."""


# ----------------------------------------------------------------------------------------------
# Building


def select_images(
    image_classes: dict[str, frozenset[int]], count: int, seed: int
) -> list[str]:
    """The class-balanced choice of ``count`` images (fewer if the split has fewer), in selection order.

    ``image_classes``: relative image path (POSIX) -> indices of the classes it contains (empty for an
    image without objects). The rule is the module docstring's; the result depends only on the
    arguments, not on the order of ``image_classes``.
    """
    def key(path: str) -> str:
        return hashlib.sha256(f"{seed}:{path}".encode()).hexdigest()

    ordered = sorted(image_classes, key=lambda p: (key(p), p))
    by_class: dict[int, list[str]] = {}
    for path in ordered:
        for c in image_classes[path]:
            by_class.setdefault(c, []).append(path)
    turns = sorted(by_class, key=lambda c: (len(by_class[c]), c))  # rarest first
    cursor = dict.fromkeys(turns, 0)
    chosen: list[str] = []
    taken: set[str] = set()
    while len(chosen) < count:
        took = False
        for c in turns:
            if len(chosen) >= count:
                break
            candidates, i = by_class[c], cursor[c]
            while i < len(candidates) and candidates[i] in taken:
                i += 1
            if i < len(candidates):
                chosen.append(candidates[i])
                taken.add(candidates[i])
                i += 1
                took = True
            cursor[c] = i
        if not took:
            break
    negatives = (p for p in ordered if not image_classes[p])
    for path in negatives:
        if len(chosen) >= count:
            break
        chosen.append(path)
    return chosen


def model_input(model: str | os.PathLike) -> tuple[ModelSpec, str]:
    """(spec, input kind) of a model file (``.pt``, ``.onnx``, ...), loaded through the runtime's backends."""
    from ssd_runtime.detector import Detector

    backend = Detector.load(model).backend
    return backend.spec, backend.input_kind


def _preprocessing(spec: ModelSpec, source: str, input_kinds: Sequence[str], model: Path | None) -> dict:
    out = {
        "source": source,
        "input_size": spec.input_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "name": spec.preprocessing,
        "resize": f"RGB (ssd_runtime.images.open_image), {spec.preprocessing} (ssd_runtime.resize) to "
        f"{spec.input_size}x{spec.input_size} (aspect ratio not kept)",
        "normalization": "float32 x * (1 / (255 std)) + (-mean / std), NCHW; uint8-nhwc: none (in the graph)",
        "input_kinds": list(input_kinds),
        "reader": "ssd_runtime.preprocess.preprocess",
    }
    if model is not None:
        out["model"] = {"path": str(model), "sha256": sha256_file(model)}
    return out


def _generated_info(root: Path, voc_roots: list[Path]) -> dict | None:
    for folder in (root, *voc_roots):
        info = folder / _GENERATED_INFO
        if info.is_file():
            try:
                data = json.loads(info.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            return data if isinstance(data, dict) else None
    return None


def _regenerate_command(generated: dict | None) -> str | None:
    """How to write the generated dataset again (``ssd-train data``), from its dataset.json."""
    if not generated or "seed" not in generated or "images" not in generated:
        return None
    test = f" --test {generated['test']}" if "test" in generated else ""
    layout = f" --format {generated['format']}" if generated.get("format", "voc") != "voc" else ""
    return f"ssd-train data --out DIR --images {generated['images']}{test} --seed {generated['seed']}{layout}"


def build_manifest(
    data: str | os.PathLike,
    *,
    split: str = "trainval",
    images: int = CALIBRATION_IMAGES,
    seed: int = 0,
    spec: ModelSpec | None = None,
    model: str | os.PathLike | None = None,
) -> dict:
    """The manifest (plain JSON-able data) of a calibration set of ``images`` images of ``split``.

    ``data``: a VOC root, a VOCdevkit or a folder holding one (:func:`ssd_runtime.voc.split_roots`), a COCO
    or a YOLO root (:func:`ssd_runtime.datasets.detect_format`; recorded as ``format`` when not VOC);
    recorded resolved, and every image path is relative to it. The preprocessing recorded is that
    of ``model`` (a model file: its spec and input kind), else of ``spec``, else the default
    ``ModelSpec.create(class_names)``; a model or spec whose class list differs from the dataset's
    raises :class:`CalibrationError`.

    Warns (:class:`CalibrationWarning`) when the split has fewer images than ``images``, or the set
    has fewer than :data:`CALIBRATION_IMAGES`; raises :class:`CalibrationError` for an empty split
    or fewer than :data:`MIN_IMAGES` images (one batch).
    """
    if images < MIN_IMAGES:
        raise CalibrationError(f"images must be at least {MIN_IMAGES} (one calibration batch), got {images}")
    root = Path(data).resolve()
    layout = detect_format(root)
    voc_roots = split_roots(root, split) if layout == "voc" else []
    class_names = dataset_classes(root, split, format=layout, warn=False)[0]
    model_path = None if model is None else Path(model).resolve()
    spec, source, input_kinds = _manifest_spec(model_path, spec, class_names, f"the dataset {root} (split {split!r})")

    records = _calibration_split(root, split, read_split(root, split, class_names, format=layout, warn=False))
    relative = {r.image_path: PurePosixPath(r.image_path.relative_to(root)).as_posix() for r in records}
    image_classes = {relative[r.image_path]: frozenset(int(c) for c in r.labels) for r in records}
    by_path = {relative[r.image_path]: r for r in records}
    chosen = select_images(image_classes, images, seed)
    if len(chosen) < images or len(chosen) < CALIBRATION_IMAGES:
        asked = f"{images} asked for, " if len(chosen) < images else ""
        warnings.warn(
            f"calibration set of {len(chosen)} image(s) ({asked}split {split!r} of {root} has {len(records)}); "
            f"NVIDIA recommends at least {CALIBRATION_IMAGES} for CNNs",
            CalibrationWarning,
            stacklevel=2,
        )

    def counts(paths: Sequence[str]) -> dict[str, int]:
        return {name: sum(c in image_classes[p] for p in paths) for c, name in enumerate(class_names) if c}

    generated = _generated_info(root, voc_roots)
    return {
        **CALIBRATION_MANIFEST.header(),
        "dataset": {
            "root": str(root),
            **({} if layout == "voc" else {"format": layout}),  # VOC manifests stay byte-identical to earlier ones
            "voc_roots": [PurePosixPath(r.relative_to(root)).as_posix() for r in voc_roots],
            "split": split,
            "split_images": len(records),
            "split_class_images": counts(list(image_classes)),
            "generated": generated,
            "regenerate": _regenerate_command(generated),
        },
        "class_names": list(class_names),
        "selection": {
            "rule": SELECTION_RULE,
            "description": _SELECTION_DESCRIPTION,
            "seed": seed,
            "requested": images,
            "selected": len(chosen),
            "class_images": counts(chosen),
        },
        "preprocessing": _preprocessing(spec, source, input_kinds, model_path),
        "images": [
            {
                "id": by_path[p].image_id,
                "path": p,
                "sha256": sha256_file(by_path[p].image_path),
                "classes": [class_names[c] for c in sorted(image_classes[p])],
            }
            for p in chosen
        ],
    }


def _calibration_split(root: Path, split: str, records: list[VOCRecord]) -> list[VOCRecord]:
    """``records``, the images of ``split`` of ``root``, which must be at least one batch."""
    if not records:
        raise CalibrationError(
            f"split {split!r} of {root} is empty: it lists no image; choose another split (--split) or dataset"
        )
    if len(records) < MIN_IMAGES:
        raise CalibrationError(
            f"split {split!r} of {root} has {len(records)} image(s), fewer than one calibration batch "
            f"({MIN_IMAGES}); calibrate on a larger split (at least {CALIBRATION_IMAGES} images recommended)"
        )
    return records


def _manifest_spec(
    model_path: Path | None, spec: ModelSpec | None, class_names: tuple[str, ...], dataset: str
) -> tuple[ModelSpec, str, tuple[str, ...]]:
    """(spec, where it came from, input kinds) of the model the set is for: the model file's, ``spec``, or
    the default spec of ``class_names``; :class:`CalibrationError` when its classes are not ``dataset``'s."""
    if model_path is not None:
        spec, input_kind = model_input(model_path)
        source, input_kinds = "model", (input_kind,)
    elif spec is not None:
        source, input_kinds = "spec", INPUT_KINDS
    else:
        spec, source, input_kinds = ModelSpec.create(class_names), "default ModelSpec.create(class_names)", INPUT_KINDS
    if tuple(spec.class_names) != class_names:
        where = str(model_path) if model_path is not None else "the model spec"
        raise CalibrationError(
            f"{where} has classes {list(spec.class_names)}, {dataset} has "
            f"{list(class_names)}: calibrate with data of the model's own classes"
        )
    return spec, source, input_kinds


def write_manifest(manifest: dict, path: str | os.PathLike) -> Path:
    """Write ``manifest`` as JSON (sorted keys, so equal manifests are equal bytes) atomically; returns the path."""
    path = Path(path)
    text = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


# ----------------------------------------------------------------------------------------------
# Using


@dataclass
class CalibrationSet:
    """A loaded calibration manifest and where its images are.

    path: the manifest file; manifest: its content; root: the dataset root the image paths are
    relative to; class_names: background first; image_paths: absolute, in selection order;
    sha256: of the manifest file (for the INT8 model's provenance).
    """

    path: Path
    manifest: dict
    root: Path
    class_names: tuple[str, ...]
    image_paths: list[Path]
    sha256: str

    @classmethod
    def load(cls, path: str | os.PathLike, *, data_root: str | os.PathLike | None = None) -> CalibrationSet:
        """Read a manifest; ``data_root`` replaces the recorded dataset root (e.g. a local copy).

        A relative recorded root is taken relative to the manifest's folder. Only the manifest file is
        hashed here; the images are checked by :meth:`verify`.
        """
        path = Path(path)
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"{path}: not a readable calibration manifest ({exc})") from exc
        CALIBRATION_MANIFEST.check(manifest, str(path))  # FormatError: another format, or a newer version
        try:
            recorded = Path(manifest["dataset"]["root"])
            class_names = tuple(str(n) for n in manifest["class_names"])
            relative = [str(entry["path"]) for entry in manifest["images"]]
        except (KeyError, TypeError) as exc:
            raise CalibrationError(f"{path}: malformed calibration manifest ({type(exc).__name__}: {exc})") from exc
        unsafe = [p for p in relative if PurePosixPath(p).is_absolute() or ".." in PurePosixPath(p).parts]
        if unsafe:
            raise CalibrationError(f"{path}: image paths must be relative to the dataset root, without '..': {unsafe[:5]}")
        if data_root is not None:
            root = Path(data_root).resolve()
        else:
            root = recorded if recorded.is_absolute() else (path.resolve().parent / recorded).resolve()
        return cls(
            path=path,
            manifest=manifest,
            root=root,
            class_names=class_names,
            image_paths=[root / p for p in relative],
            sha256=sha256_file(path),
        )

    def __len__(self) -> int:
        return len(self.image_paths)

    def verify(self) -> None:
        """Re-hash every image; one :class:`CalibrationError` names every missing or changed file."""
        if not self.root.is_dir():
            regenerate = self.manifest["dataset"].get("regenerate")
            hint = f", or regenerate it with `{regenerate}`" if regenerate else ""
            raise CalibrationError(
                f"{self.path}: dataset root {self.root} not found; pass data_root= (the dataset's "
                f"local copy){hint}"
            )
        missing, changed = [], []
        for entry, image_path in zip(self.manifest["images"], self.image_paths):
            if not image_path.is_file():
                missing.append(entry["path"])
            elif sha256_file(image_path) != entry["sha256"]:
                changed.append(entry["path"])
        if missing or changed:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing: {', '.join(missing)}")
            if changed:
                parts.append(f"{len(changed)} changed (sha256 differs): {', '.join(changed)}")
            raise CalibrationError(
                f"{self.path}: calibration images under {self.root} do not match the manifest - "
                f"{'; '.join(parts)}; restore the dataset the manifest was built from or rebuild the manifest"
            )

    def check_classes(self, spec: ModelSpec) -> None:
        """Raise :class:`CalibrationError` when the model's class list differs from the set's."""
        if tuple(spec.class_names) != self.class_names:
            raise CalibrationError(
                f"calibration set {self.path} was built for classes {list(self.class_names)}, the model has "
                f"{list(spec.class_names)}: build a calibration set from the model's own dataset"
            )

    def batches(
        self, spec: ModelSpec, batch_size: int = DEFAULT_BATCH, input_kind: str = "float32-nchw"
    ) -> Iterator[np.ndarray]:
        """Verify the images, then yield them preprocessed as the runtime does, ``batch_size`` at a time.

        Each batch is ``preprocess(paths, spec, input_kind).pixels``: float32 (N, 3, S, S) normalized
        RGB or uint8 (N, S, S, 3) RGB, S = ``spec.input_size``; the last batch may be smaller. The
        verification runs here, before the first batch is asked for.
        """
        if batch_size < 1:
            raise CalibrationError(f"batch_size must be at least 1, got {batch_size}")
        if input_kind not in INPUT_KINDS:
            raise CalibrationError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
        self.verify()
        return self._read_batches(spec, batch_size, input_kind)

    def _read_batches(self, spec: ModelSpec, batch_size: int, input_kind: str) -> Iterator[np.ndarray]:
        for start in range(0, len(self.image_paths), batch_size):
            yield preprocess(self.image_paths[start : start + batch_size], spec, input_kind).pixels
