"""The model spec: everything a runtime needs to use a model, carried by every artifact.

A checkpoint stores it, the ONNX export writes it into ``metadata_props`` and the TensorRT builder
into the engine's sidecar JSON; every loader reads it back with :meth:`ModelSpec.from_dict`, which
checks the schema version (:data:`ssd_runtime.formats.MODEL_SPEC`) and that the priors it describes hash
to the recorded value.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np

from ssd_runtime.boxes import VARIANCES
from ssd_runtime.detections import float32_threshold
from ssd_runtime.errors import FormatError, SettingsError, SpecError
from ssd_runtime.formats import MODEL_SPEC, VERSION_KEY
from ssd_runtime.priors import PriorConfig, make_priors, priors_sha256
from ssd_runtime.resize import PREPROCESSING

#: 2 added ``preprocessing``. Version 1 files (written before it) are read as version 2 with
#: ``preprocessing = LEGACY_PREPROCESSING``: see :data:`LEGACY_PREPROCESSING`.
SCHEMA_VERSION = MODEL_SPEC.version
READABLE_SCHEMA_VERSIONS = MODEL_SPEC.readable
#: The preprocessing of the name this toolkit writes into new specs.
DEFAULT_PREPROCESSING = "rgb8-bilinear-q22-v1"
#: What a version-1 spec (no ``preprocessing`` field) means. Those artifacts were made, calibrated and
#: checked with Pillow's ``resize(BILINEAR)`` of whatever Pillow was installed, which was never one
#: behaviour: ``rgb8-bilinear-q22-v1`` equals Pillow 12.3's pixels on all of 50 test images and
#: differs from Pillow 13.0's by one level on 5 of them (1.7% of all values; docs/reference.md
#: "Preprocessing"). So they load with it, rather than being refused: same pixels as the Pillow 12.3
#: they were mostly made with, and from now on the same pixels everywhere.
LEGACY_PREPROCESSING = "rgb8-bilinear-q22-v1"
#: Normalization layers of the network: the reference has none; "batch" (after every base and extra
#: convolution) trains faster from scratch; "batch-from-conv2" leaves out the two full-resolution
#: convolutions (conv1_1, conv1_2), whose norms cost about a fifth of a CPU training step.
NORMS = ("none", "batch", "batch-from-conv2")

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

class SpecVersionError(SpecError, FormatError):
    """A spec of a schema version this toolkit does not read (or stamped as another format): a
    :class:`SpecError` to the loaders, a :class:`FormatError` like every refused versioned file."""


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalization(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale, bias), each (3,), with ``x * scale + bias == (x / 255 - mean) / std`` for uint8 x.

    The one home of these constants: training batches, the runtime's preprocess, the uint8 ONNX
    graph and the parity checks all multiply by ``scale`` then add ``bias`` in float32, so their
    inputs are bit-identical.
    """
    scale = np.asarray([1.0 / (255.0 * s) for s in std], dtype=np.float32)
    bias = np.asarray([-m / s for m, s in zip(mean, std)], dtype=np.float32)
    return scale, bias


@dataclass(frozen=True)
class PostprocessSettings:
    """Decode + NMS settings: keep scores > min_score, suppress IoU > max_overlap, keep top_k.

    Ranges, checked on creation (:class:`~ssd_runtime.errors.SettingsError`): min_score in [0, 1) (scores
    are softmax probabilities, so ``> 1`` keeps nothing), max_overlap in (0, 1] (1 suppresses nothing),
    top_k an integer >= 0 (0 keeps no detection).
    """

    min_score: float
    max_overlap: float
    top_k: int

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= float(self.min_score) < 1.0:  # also refuses nan
            problems.append(f"min_score must be in [0, 1), got {self.min_score}")
        if not 0.0 < float(self.max_overlap) <= 1.0:
            problems.append(f"max_overlap must be in (0, 1], got {self.max_overlap}")
        if isinstance(self.top_k, bool) or int(self.top_k) != self.top_k or self.top_k < 0:
            problems.append(f"top_k must be an integer >= 0, got {self.top_k}")
        if problems:
            raise SettingsError("postprocess settings out of range: " + "; ".join(problems) + " (the reference SSD300 "
                                "detects at min_score 0.2, max_overlap 0.5, top_k 200 and evaluates at 0.01, 0.45, 200)")

    @property
    def min_score_float32(self) -> np.float32:
        """``min_score`` as the largest float32 <= it: for float32 scores ``s > min_score_float32`` iff
        ``s > min_score`` (:func:`~ssd_runtime.detections.float32_threshold`), in any precision. Every
        postprocess compares against this one value."""
        return float32_threshold(self.min_score)

    @property
    def max_overlap_float32(self) -> np.float32:
        """``max_overlap`` as the largest float32 <= it: for float32 IoUs ``iou > max_overlap_float32`` iff
        ``iou > max_overlap``."""
        return float32_threshold(self.max_overlap)

    def to_dict(self) -> dict:
        return {"min_score": self.min_score, "max_overlap": self.max_overlap, "top_k": self.top_k}

    @classmethod
    def from_dict(cls, data: dict) -> PostprocessSettings:
        return cls(float(data["min_score"]), float(data["max_overlap"]), int(data["top_k"]))


DETECTION_SETTINGS = PostprocessSettings(min_score=0.2, max_overlap=0.5, top_k=200)
EVALUATION_SETTINGS = PostprocessSettings(min_score=0.01, max_overlap=0.45, top_k=200)


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: classes, input, priors, box coding and postprocess defaults.

    class_names: index 0 is the background class.
    input_size: side of the square RGB input in pixels.
    mean, std: per-channel normalization applied to RGB values scaled to [0, 1].
    width: channel multiplier of the network (1.0 = the reference SSD300).
    norm: "none" (the reference), "batch" (BatchNorm after each base and extra convolution) or
        "batch-from-conv2" (the same without conv1_1 and conv1_2); norms are folded into the
        convolutions for inference.
    priors_sha256: sha256 of the float32 priors generated from ``priors``.
    provenance: plain string pairs (source checkpoint / ONNX / calibration hashes, tool versions).
    preprocessing: the name of the function that turns an image into the model's uint8
        ``input_size x input_size`` RGB pixels (resize and colour conversion), one of
        :data:`ssd_runtime.resize.PREPROCESSING`.
    """

    class_names: tuple[str, ...]
    priors_sha256: str
    input_size: int = 300
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    width: float = 1.0
    norm: str = "none"
    priors: PriorConfig = field(default_factory=PriorConfig)
    variances: tuple[float, float] = VARIANCES
    detection: PostprocessSettings = DETECTION_SETTINGS
    evaluation: PostprocessSettings = EVALUATION_SETTINGS
    provenance: tuple[tuple[str, str], ...] = ()
    preprocessing: str = DEFAULT_PREPROCESSING
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise SpecError(f"model spec: norm must be one of {NORMS}, got {self.norm!r}")
        if self.preprocessing not in PREPROCESSING:
            raise SpecError(
                f"model spec: preprocessing {self.preprocessing!r} is not implemented by this toolkit (it knows "
                f"{sorted(PREPROCESSING)}); the artifact was made by a newer toolkit: upgrade ssd300 to use it"
            )

    @classmethod
    def create(
        cls,
        class_names: tuple[str, ...] | list[str] = VOC_CLASSES,
        *,
        width: float = 1.0,
        priors: PriorConfig | None = None,
        **kwargs,
    ) -> ModelSpec:
        """A spec for a new model; computes the prior hash from the prior configuration."""
        priors = priors or PriorConfig()
        names = tuple(str(n) for n in class_names)
        _check_class_names(names)
        return cls(
            class_names=names,
            priors_sha256=priors_sha256(make_priors(priors)),
            width=float(width),
            priors=priors,
            **kwargs,
        )

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names)

    def normalization(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 (scale, bias), each (3,): ``pixels * scale + bias`` normalizes uint8 RGB (see :func:`normalization`)."""
        return normalization(self.mean, self.std)

    @property
    def num_priors(self) -> int:
        return self.priors.num_priors

    def make_priors(self) -> np.ndarray:
        """The priors of this spec, float32 (num_priors, 4) fractional cxcywh, hash-checked."""
        priors = make_priors(self.priors)
        actual = priors_sha256(priors)
        if actual != self.priors_sha256:
            raise SpecError(
                f"the priors generated from this spec hash to {actual[:12]}..., the spec records "
                f"{self.priors_sha256[:12]}...: the artifact was made with another prior geometry; "
                "re-export it with this toolkit"
            )
        return priors

    def with_provenance(self, **items: str) -> ModelSpec:
        """A copy with provenance entries added or replaced (keys sorted)."""
        merged = dict(self.provenance)
        merged.update({k: str(v) for k, v in items.items()})
        return replace(self, provenance=tuple(sorted(merged.items())))

    def to_dict(self) -> dict:
        """Plain data (JSON-able, and loadable by ``torch.load(weights_only=True)``)."""
        return {
            VERSION_KEY: self.schema_version,  # no "format" stamp: see ssd_runtime.formats.MODEL_SPEC
            "class_names": list(self.class_names),
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "width": self.width,
            "norm": self.norm,
            "priors": self.priors.to_dict(),
            "priors_sha256": self.priors_sha256,
            "variances": list(self.variances),
            "detection": self.detection.to_dict(),
            "evaluation": self.evaluation.to_dict(),
            "provenance": dict(self.provenance),
            "preprocessing": self.preprocessing,
        }

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "model spec") -> ModelSpec:
        """Rebuild and check a spec: schema version known, priors hash to the recorded value.

        A version-1 spec is read as the current version with ``preprocessing`` set to
        :data:`LEGACY_PREPROCESSING` (version 1 had no such field).
        """
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping, got {type(data).__name__}")
        version = MODEL_SPEC.check(data, source, error=SpecVersionError)
        if version >= 2 and "preprocessing" not in data:
            raise SpecError(f"{source}: malformed model spec (schema version {version} without 'preprocessing')")
        try:
            spec = cls(
                class_names=tuple(str(n) for n in data["class_names"]),
                priors_sha256=str(data["priors_sha256"]),
                input_size=int(data["input_size"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                width=float(data["width"]),
                norm=str(data.get("norm", "none")),  # absent in files written before the option
                priors=PriorConfig.from_dict(data["priors"]),
                variances=tuple(float(v) for v in data["variances"]),
                detection=PostprocessSettings.from_dict(data["detection"]),
                evaluation=PostprocessSettings.from_dict(data["evaluation"]),
                provenance=tuple(sorted((str(k), str(v)) for k, v in data["provenance"].items())),
                preprocessing=str(data.get("preprocessing", LEGACY_PREPROCESSING)),
                schema_version=SCHEMA_VERSION,  # read as the current version (see LEGACY_PREPROCESSING)
            )
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"{source}: malformed model spec ({type(exc).__name__}: {exc})") from exc
        _check_class_names(spec.class_names, source)
        spec.make_priors()  # raises on a prior-hash mismatch
        return spec

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "model spec") -> ModelSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{source}: model spec is not valid JSON ({exc})") from exc
        return cls.from_dict(data, source=source)


def _check_class_names(names: tuple[str, ...], source: str = "model spec") -> None:
    if len(names) < 2:
        raise SpecError(f"{source}: need background plus at least one class, got {list(names)}")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise SpecError(f"{source}: duplicate class names {dupes}")
