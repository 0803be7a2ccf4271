"""Read what an exported ``ssd300.onnx`` says about itself: the model spec and export provenance.

The exporter (``ssd_export.onnx.export``) writes into the ONNX ``metadata_props``:

- ``ssd300.spec``: the :class:`~ssd_runtime.spec.ModelSpec` as JSON (classes, input size, mean/std,
  prior configuration and the sha256 of its priors, variances, postprocess defaults, provenance);
- ``ssd300.variant``: ``fp32`` | ``fp16`` | ``uint8-nhwc`` | ``end2end`` | ``int8`` (what the graph's input
  and outputs are, see :data:`VARIANT_IO`; ``int8`` is the Q/DQ model ``ssd-export int8`` makes of an
  ``fp32`` export);
- ``ssd300.source_checkpoint_sha256``: sha256 of the checkpoint file the weights came from;
- ``ssd300.exporter``, ``ssd300.opset``, ``ssd300.format_version`` and, for ``end2end``,
  ``ssd300.end2end`` (the settings and caps baked into the graph, JSON);
- ``ssd300.trace_batch``: the batch size the graph was traced at (verification runs at another one);
- ``ssd300.quantization`` (``int8`` only): the quantizer, its version and settings, the sha256 of the
  source ONNX and of the calibration manifest (JSON; the same facts are in the spec's provenance).

Each key has a named constant here (``META_*``); writers and readers use those, never the string.

Loading rules (``docs/reference.md``, "Loading untrusted files"): before any loader reads tensor data,
:func:`check_external_data` refuses external-data locations that are absolute, contain ``..``, or
resolve (through symlinks) outside the model's folder. The exporter itself always writes a single
self-contained file.

No import of torch, onnx or onnxruntime at module import time: the ``onnx`` package is imported
inside the functions that parse the file (``pip install onnx``, part of the ``export`` extra).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from ssd_runtime.errors import SpecError
from ssd_runtime.spec import ModelSpec, PostprocessSettings
from ssd_runtime.variants import VARIANT_TABLE

META_SPEC = "ssd300.spec"
META_VARIANT = "ssd300.variant"
META_SOURCE_SHA256 = "ssd300.source_checkpoint_sha256"
META_EXPORTER = "ssd300.exporter"
META_OPSET = "ssd300.opset"
META_FORMAT_VERSION = "ssd300.format_version"
META_END2END = "ssd300.end2end"
META_TRACE_BATCH = "ssd300.trace_batch"
META_QUANTIZATION = "ssd300.quantization"
#: Version of the metadata layout above (the spec carries its own schema version).
ONNX_FORMAT_VERSION = 1

#: The graph input's dtype and layout of each input kind; the input is named ``images``.
_INPUT_TENSOR = {"float32-nchw": ("float32", "NCHW"), "uint8-nhwc": ("uint8", "NHWC")}
#: Graph input and outputs of each variant: (input name, input dtype, layout), output names (a view of
#: :data:`ssd_runtime.variants.VARIANT_TABLE`).
VARIANT_IO: dict[str, tuple[tuple[str, str, str], tuple[str, ...]]] = {
    v.name: (("images", *_INPUT_TENSOR[v.input_kind]), v.output_names) for v in VARIANT_TABLE.values()
}
#: Variants made from another ONNX file (``ssd-export int8``), not exported from a checkpoint.
QUANTIZED_VARIANTS = tuple(v.name for v in VARIANT_TABLE.values() if v.quantized)
#: Variants ``ssd-export onnx`` exports from a checkpoint.
VARIANTS = tuple(v for v in VARIANT_IO if v not in QUANTIZED_VARIANTS)


class OnnxModelError(ValueError):
    """An ONNX file is unsafe to load, not an SSD300 toolkit export, or its metadata is malformed."""


@dataclass(frozen=True)
class End2EndConfig:
    """What an end-to-end graph bakes in: postprocess settings and its per-image candidate cap.

    max_candidates: at most this many (class, prior) candidates per image enter the NMS (the
        highest-scored; TensorRT's NMS layer considers at most 5000 and its TopK takes k <= 3840).
    """

    settings: PostprocessSettings
    max_candidates: int

    def to_dict(self) -> dict:
        return {"settings": self.settings.to_dict(), "max_candidates": self.max_candidates}

    @classmethod
    def from_dict(cls, data: dict) -> End2EndConfig:
        return cls(PostprocessSettings.from_dict(data["settings"]), int(data["max_candidates"]))


@dataclass(frozen=True)
class OnnxModelInfo:
    """Everything an exported ONNX file says about itself (read from ``metadata_props``).

    trace_batch: the batch size the graph was traced at (None if not recorded or not an integer).
    quantization: ``int8`` only - quantizer, settings and source hashes (``ssd300.quantization``).
    """

    path: Path
    spec: ModelSpec
    variant: str
    source_checkpoint_sha256: str
    exporter: str
    opset: int
    end2end: End2EndConfig | None = None
    trace_batch: int | None = None
    quantization: dict | None = None

    @property
    def input_name(self) -> str:
        return VARIANT_IO[self.variant][0][0]

    @property
    def input_dtype(self) -> str:
        return VARIANT_IO[self.variant][0][1]

    @property
    def input_layout(self) -> str:
        return VARIANT_IO[self.variant][0][2]

    @property
    def output_names(self) -> tuple[str, ...]:
        return VARIANT_IO[self.variant][1]


def _is_unsafe_location(location: str) -> bool:
    """True for an absolute location or one with a ``..`` component (POSIX or Windows spelling)."""
    if not location or "\x00" in location:
        return True
    for pure in (PurePosixPath(location), PureWindowsPath(location)):
        if pure.is_absolute() or pure.anchor or ".." in pure.parts:
            return True
    return False


def check_external_data(path: str | os.PathLike) -> list[str]:
    """Refuse an ONNX file whose external data could escape its folder; return the locations used.

    Parses the protobuf without loading external data (nothing outside the file is opened). Every
    tensor stored externally (initializers, sparse initializers, node attributes, subgraphs,
    functions) must name a relative ``location`` without ``..`` that resolves, after following
    symlinks, inside the model's folder. Raises :class:`OnnxModelError` naming the file and location.
    """
    model = _load_proto(path)
    from onnx import TensorProto

    path = Path(path)
    folder = path.resolve().parent
    locations: list[str] = []
    for tensor in _all_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        if _is_unsafe_location(location):
            raise OnnxModelError(
                f"refused {path}: tensor {tensor.name!r} has external data at {location!r}, which is "
                "absolute or contains '..' and could read files outside the model folder; re-export "
                "the model as a single file (ssd-export onnx)"
            )
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):
            raise OnnxModelError(
                f"refused {path}: tensor {tensor.name!r} has external data {location!r} that resolves "
                f"to {target}, outside the model folder {folder} (a symlink?); re-export the model as a "
                "single file"
            )
        if location not in locations:
            locations.append(location)
    return locations


def _all_tensors(model) -> Iterator:
    """Every TensorProto of a ModelProto: initializers, sparse ones, attributes, subgraphs, functions."""

    def graph_tensors(graph) -> Iterator:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        yield from nodes_tensors(graph.node)

    def nodes_tensors(nodes) -> Iterator:
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices
                for sparse in attr.sparse_tensors:
                    yield sparse.values
                    yield sparse.indices
                if attr.HasField("g"):
                    yield from graph_tensors(attr.g)
                for sub in attr.graphs:
                    yield from graph_tensors(sub)

    yield from graph_tensors(model.graph)
    for function in model.functions:
        yield from nodes_tensors(function.node)


def _load_proto(path: str | os.PathLike):
    """The ModelProto of ``path`` without its external data (imports onnx lazily)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise OnnxModelError(
            f"reading {path} needs the onnx package: pip install 'ssd300-toolkit[export]' (or onnx)"
        ) from exc
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise OnnxModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from exc


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (external data checked first, never read)."""
    check_external_data(path)
    model = _load_proto(path)
    return {p.key: p.value for p in model.metadata_props}


def read_onnx_info(path: str | os.PathLike) -> OnnxModelInfo:
    """Rebuild the spec and export provenance of a toolkit ONNX file from the file alone.

    The spec is checked as every loader checks it (schema version, prior hash). Raises
    :class:`OnnxModelError` for a file without toolkit metadata, :class:`SpecError` for a bad spec.
    """
    path = Path(path)
    meta = read_onnx_metadata(path)
    if META_SPEC not in meta:
        raise OnnxModelError(
            f"{path} carries no '{META_SPEC}' metadata: it was not exported by this toolkit; export it "
            "with `ssd-export onnx --model C -o OUT`"
        )
    version = meta.get(META_FORMAT_VERSION)
    if version != str(ONNX_FORMAT_VERSION):
        raise OnnxModelError(
            f"{path}: ONNX metadata format version {version!r} is not supported (this toolkit reads "
            f"{ONNX_FORMAT_VERSION}); re-export the model with this toolkit"
        )
    spec = ModelSpec.from_json(meta[META_SPEC], source=f"{path} ({META_SPEC})")
    variant = meta.get(META_VARIANT, "")
    if variant not in VARIANT_IO:
        raise OnnxModelError(f"{path}: unknown variant {variant!r} (known: {', '.join(VARIANT_IO)})")
    end2end = None
    if variant == "end2end":
        try:
            end2end = End2EndConfig.from_dict(json.loads(meta[META_END2END]))
        except (KeyError, TypeError, ValueError) as exc:
            raise OnnxModelError(f"{path}: malformed '{META_END2END}' metadata ({exc})") from exc
    quantization = None
    if META_QUANTIZATION in meta:
        try:
            quantization = dict(json.loads(meta[META_QUANTIZATION]))
        except (TypeError, ValueError) as exc:
            raise OnnxModelError(f"{path}: malformed '{META_QUANTIZATION}' metadata ({exc})") from exc
    try:
        opset = int(meta.get(META_OPSET, "0"))
    except ValueError as exc:
        raise OnnxModelError(f"{path}: malformed '{META_OPSET}' metadata") from exc
    trace_batch = meta.get(META_TRACE_BATCH, "")
    return OnnxModelInfo(
        path=path,
        spec=spec,
        variant=variant,
        source_checkpoint_sha256=meta.get(META_SOURCE_SHA256, ""),
        exporter=meta.get(META_EXPORTER, ""),
        opset=opset,
        end2end=end2end,
        trace_batch=int(trace_batch) if trace_batch.isdecimal() else None,
        quantization=quantization,
    )


def onnx_metadata(
    spec: ModelSpec,
    variant: str,
    *,
    source_checkpoint_sha256: str,
    exporter: str,
    opset: int,
    trace_batch: int | None,
    end2end: End2EndConfig | None = None,
    quantization: dict | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` of a toolkit ONNX file (the writer :func:`read_onnx_info` reads back)."""
    if variant not in VARIANT_IO:
        raise OnnxModelError(f"unknown variant {variant!r} (known: {', '.join(VARIANT_IO)})")
    metadata = {
        META_FORMAT_VERSION: str(ONNX_FORMAT_VERSION),
        META_SPEC: spec.to_json(),
        META_VARIANT: variant,
        META_SOURCE_SHA256: source_checkpoint_sha256,
        META_EXPORTER: exporter,
        META_OPSET: str(opset),
        META_TRACE_BATCH: "" if trace_batch is None else str(trace_batch),
    }
    if end2end is not None:
        metadata[META_END2END] = json.dumps(end2end.to_dict(), sort_keys=True)
    if quantization is not None:
        metadata[META_QUANTIZATION] = json.dumps(quantization, sort_keys=True)
    return metadata


def write_onnx_metadata(model, metadata: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of an ``onnx.ModelProto`` with ``metadata`` (see :func:`onnx_metadata`)."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value


def read_onnx_spec(path: str | os.PathLike) -> ModelSpec:
    """The model spec an exported ONNX file carries (see :func:`read_onnx_info`)."""
    return read_onnx_info(path).spec


__all__ = [
    "META_END2END",
    "META_EXPORTER",
    "META_FORMAT_VERSION",
    "META_OPSET",
    "META_QUANTIZATION",
    "META_SOURCE_SHA256",
    "META_SPEC",
    "META_TRACE_BATCH",
    "META_VARIANT",
    "ONNX_FORMAT_VERSION",
    "QUANTIZED_VARIANTS",
    "End2EndConfig",
    "OnnxModelError",
    "OnnxModelInfo",
    "SpecError",
    "VARIANTS",
    "VARIANT_IO",
    "check_external_data",
    "onnx_metadata",
    "read_onnx_info",
    "read_onnx_metadata",
    "read_onnx_spec",
    "write_onnx_metadata",
]
