"""SSD300 deployable runtime: spec, priors, box ops, data, metric, backends and the Detector.

Importing this package never imports torch; torch, TensorRT, CUDA and ONNX Runtime are imported
lazily inside the backend or postprocess that needs them.
"""
from ssd_runtime.detector import Detector, ImageDetections
from ssd_runtime.errors import AnnotationError, DatasetError, ImageError, SettingsError, SpecError
from ssd_runtime.priors import PRIOR_PRESETS, PriorConfig, make_priors, priors_sha256
from ssd_runtime.spec import (
    DETECTION_SETTINGS,
    EVALUATION_SETTINGS,
    VOC_CLASSES,
    ModelSpec,
    PostprocessSettings,
)

__all__ = [
    "AnnotationError",
    "DatasetError",
    "Detector",
    "ImageDetections",
    "ImageError",
    "DETECTION_SETTINGS",
    "EVALUATION_SETTINGS",
    "VOC_CLASSES",
    "ModelSpec",
    "PostprocessSettings",
    "PRIOR_PRESETS",
    "PriorConfig",
    "SettingsError",
    "SpecError",
    "make_priors",
    "priors_sha256",
]
__version__ = "0.1.0"
