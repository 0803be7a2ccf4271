"""Versioned JSON files: one record per format, one key spelling, one check, one error.

A file is stamped ``{"format": NAME, "schema_version": N, ...}`` on write (:meth:`FileFormat.stamp`) and
checked on read (:meth:`FileFormat.check`), which raises :class:`~ssd_runtime.errors.FormatError` (or the
subclass a reader names, e.g. one that is also its own domain's error) saying the file, the format
expected and found, the versions read and found, and what to do. Files written before this spelling
still load: the version may be under ``version``, ``schema`` or ``format_version``
(:data:`OLD_VERSION_KEYS`), and a format whose old files carried no name accepts a missing ``format``.

The formats: detections files, calibration manifests, deploy reports and states, engine sidecars,
the model spec (embedded in every artifact), matches files (an ``.npz`` whose header arrays carry the
same two keys) and the image-check cache. Torch-free.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ssd_runtime.errors import FormatError

__all__ = [
    "CALIBRATION_MANIFEST", "DEPLOY_REPORT", "DEPLOY_STATE", "DETECTIONS", "ENGINE_SIDECAR", "FORMATS", "FORMAT_KEY",
    "IMAGE_CHECK_CACHE", "MATCHES", "MODEL_SPEC", "OLD_VERSION_KEYS", "VERSION_KEY", "FileFormat", "FormatError",
]

FORMAT_KEY = "format"
VERSION_KEY = "schema_version"
#: Where files written before :data:`VERSION_KEY` keep their version, in the order they are looked up.
OLD_VERSION_KEYS = ("version", "schema", "format_version")


@dataclass(frozen=True)
class FileFormat:
    """One versioned file format.

    name: the ``format`` stamp. version: the version written. readable: every version read (the
    written one included). remedy: what to do with a file that is refused. unnamed_before: old files
    of this format carried no ``format`` key, so a missing one is accepted (a different one never is).
    """

    name: str
    version: int
    readable: tuple[int, ...]
    remedy: str
    unnamed_before: bool = False

    def header(self) -> dict[str, Any]:
        """The stamp a file of this format starts with: ``{"format": name, "schema_version": version}``."""
        return {FORMAT_KEY: self.name, VERSION_KEY: self.version}

    def stamp(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` after :meth:`header` (keys of those names in ``data`` are replaced by the stamp)."""
        return {**self.header(), **{k: v for k, v in data.items() if k not in (FORMAT_KEY, VERSION_KEY)}}

    def check(self, data: Any, source: str, *, error: type[FormatError] = FormatError) -> int:
        """The version of ``data`` (a file's parsed JSON, read from ``source``); ``error`` (a FormatError) when
        refused."""
        if not isinstance(data, Mapping):
            self._refuse(source, f"a JSON {type(data).__name__}, not an object", None, error)
        found = data.get(FORMAT_KEY)
        if found != self.name and not (found is None and self.unnamed_before):
            self._refuse(source, found, _version_of(data), error)
        version = _version_of(data)
        if not isinstance(version, int) or isinstance(version, bool) or version not in self.readable:
            self._refuse(source, found, version, error)
        return version

    def _refuse(self, source: str, found: Any, version: Any, error: type[FormatError]) -> None:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > max(self.readable)
        why = " (written by a newer toolkit)" if newer and found in (self.name, None) else ""
        raise error(
            f"{source}: expected a {self.name!r} file of {VERSION_KEY} {_versions(self.readable)}, found format "
            f"{found!r} {VERSION_KEY} {version!r}{why}; {self.remedy}"
        )


def _version_of(data: Mapping[str, Any]) -> Any:
    for key in (VERSION_KEY, *OLD_VERSION_KEYS):
        if key in data:
            return data[key]
    return None


def _versions(readable: tuple[int, ...]) -> str:
    return str(readable[0]) if len(readable) == 1 else " or ".join(map(str, readable))


DETECTIONS = FileFormat("ssd300-detections", 1, (1,), "rerun the evaluation with this toolkit (or choose another "
                        "output)")
CALIBRATION_MANIFEST = FileFormat("ssd300-calibration", 1, (1,), "rebuild it with `ssd-export calibration --data DIR`")
DEPLOY_REPORT = FileFormat("ssd300-deploy-report", 1, (1,), "rerun `ssd-export deploy` with this toolkit")
DEPLOY_STATE = FileFormat("ssd300-deploy-state", 1, (1,), "remove it (the next `ssd-export deploy` rebuilds every "
                          "step)", unnamed_before=True)
#: The sidecar of a TensorRT engine (:mod:`ssd_runtime.engine_sidecar`). Schema 2 added ``tf32``; files
#: before the stamp spelled the version ``schema`` and carried no name.
ENGINE_SIDECAR = FileFormat("ssd300-engine-sidecar", 2, (1, 2), "rebuild the engine with this toolkit's "
                            "`ssd-export engine`", unnamed_before=True)
#: The model spec (:class:`ssd_runtime.spec.ModelSpec`), embedded in checkpoints, ONNX metadata, engine
#: sidecars and Triton's spec.json. Version 2 added ``preprocessing``. It is written with its version
#: only, no name, so every artifact stays byte for byte what earlier toolkits wrote (their sha256s are
#: recorded in sidecars and deploy states); a ``format`` key, where present, must be this one.
MODEL_SPEC = FileFormat("ssd300-model-spec", 2, (1, 2), "re-export the model with this toolkit, or upgrade the "
                        "toolkit if the artifact is newer", unnamed_before=True)
#: A model's per-detection matches (:func:`ssd_runtime.bootstrap.save_matches`), an ``.npz`` whose
#: ``format`` and ``schema_version`` arrays are this stamp.
MATCHES = FileFormat("ssd300-matches", 1, (1,), "rerun the evaluation that wrote it")
#: The verdicts cache of :func:`ssd_runtime.image_check.check_images`. Only a cache: a file of another
#: format or version is ignored and rewritten, never an error. Files before the stamp had ``version``.
IMAGE_CHECK_CACHE = FileFormat("ssd300-image-check-cache", 1, (1,), "it is only a cache: it is rewritten",
                               unnamed_before=True)

#: Every format stamped through this module, by name.
FORMATS: dict[str, FileFormat] = {f.name: f for f in (
    DETECTIONS, CALIBRATION_MANIFEST, DEPLOY_REPORT, DEPLOY_STATE, ENGINE_SIDECAR, MODEL_SPEC, MATCHES,
    IMAGE_CHECK_CACHE,
)}
