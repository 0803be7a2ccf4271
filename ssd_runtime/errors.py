"""Typed errors of the toolkit. Messages say what went wrong, where, and what to do."""
from __future__ import annotations


class ToolkitError(Exception):
    """Base of errors that are not ValueError/FileNotFoundError (e.g. a training run that cannot go on).

    The CLIs turn every ToolkitError, ValueError and FileNotFoundError into a short message and exit 2.
    """


class SpecError(ValueError):
    """A model spec is missing, of an unknown schema, or does not match the artifact it came with."""


class SettingsError(ValueError):
    """Postprocess settings out of their range (min_score, max_overlap, top_k)."""


class ImageError(ValueError):
    """An image file cannot be used: not an image, an unsupported format, truncated, or too large."""


class AnnotationError(ValueError):
    """A VOC annotation (or split file) is malformed, unsafe, or names a class the model does not know."""


class DatasetError(FileNotFoundError):
    """A dataset folder is not in the expected layout, or files listed by a split are missing."""


class SourceError(ValueError):
    """A video source cannot be opened or read: a missing file or camera, an unknown codec, corrupt or
    truncated data, an unreachable stream. The message names the source."""


class FormatError(ValueError):
    """A versioned file is not of the expected format, or of a version this toolkit does not read."""
