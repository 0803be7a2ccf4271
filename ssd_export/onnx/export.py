"""Export a toolkit checkpoint to a single, self-describing, verified ``ssd300.onnx``.

Exporter and opset (one pair, pinned): torch.onnx's TorchScript exporter (``dynamo=False``) at
opset 19.

- opset 19: within the range the ONNX parsers of TensorRT 10.x and 11 (up to 25) read (not checked on
  a device: TensorRT cannot be installed here), run by ONNX Runtime >= 1.15, and the minimum NVIDIA recommends for INT8 Q/DQ,
  so the INT8 path quantizes this same file. The graph uses only Conv, MaxPool (ceil_mode), Relu,
  Pow/ReduceSum/Sqrt/Div/Mul (L2 norm), Transpose/Reshape/Concat, plus Softmax, Exp, Slice, TopK,
  NonMaxSuppression, ScatterND, GatherElements, Where in the end-to-end variant.
- TorchScript exporter: the same code path from torch 2.4 to 2.14 (the GPU machine has 2.11), exports
  this network in ~2 s on a 2-core CPU against ~15-25 s for the dynamo exporter, and gives identical
  parity. It is deprecated since torch 2.9 (a warning, silenced here); ``exporter="dynamo"`` (needs
  torch >= 2.5 and onnxscript) produces an equivalent graph and is tested, so switching the default is
  one line when torch removes the TorchScript exporter.

Every export: trace on seeded random inputs -> ONNX -> (end2end: NMS appended) -> spec and provenance
into ``metadata_props`` -> ``onnx.checker`` (full check) and strict shape inference -> TensorRT's ONNX-parser
rules (:mod:`ssd_export.tensorrt_rules`) -> written to a
temporary file beside the output -> verified with ONNX Runtime against PyTorch on other images at
another batch size -> moved into place atomically. A failed check or parity leaves no file behind
(and an existing file at ``output`` untouched) and raises :class:`ExportError` / :class:`ParityError` /
:class:`~ssd_export.tensorrt_rules.TensorRTRuleError` (a graph TensorRT's parser would refuse) /
:class:`~ssd_export.onnx.end2end.End2EndLimitError` (end2end settings needing a TopK k > 3840, before the trace).
"""
from __future__ import annotations

import copy
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from ssd_export.defaults import (
    DEFAULT_EXPORTER,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_OPSET,
    DEFAULT_VARIANT,
    END2END_SETTINGS,
    EXPORTERS,
    TRACE_BATCH,
)
from ssd_export.onnx.end2end import append_nms, check_end2end_limits
from ssd_export.parity import ParityError, write_report
from ssd_export.tensorrt_rules import TensorRTRuleError, require_tensorrt_rules
from ssd_export.onnx.verify import verify_onnx
from ssd_export.onnx.wrappers import ScoresAndBoxes, Uint8NHWCInput
from ssd_train.model import FP16Network
from ssd_runtime.fileio import atomic_path, sha256_file
from ssd_runtime.onnx_model import VARIANT_IO, VARIANTS, End2EndConfig, onnx_metadata, write_onnx_metadata
from ssd_runtime.spec import ModelSpec, PostprocessSettings
from ssd_train.checkpoint import load_model

TRACE_SEED = 1234

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportReport", "ParityError", "TensorRTRuleError", "export_onnx"]


class ExportError(ValueError):
    """The export failed (bad arguments, exporter error, ONNX checker or shape inference failure)."""


@dataclass
class ExportReport:
    """What an export wrote and how it was checked (plain data via :meth:`to_dict`)."""

    output: Path
    variant: str
    opset: int
    exporter: str
    dynamic_batch: bool
    trace_batch: int
    source_checkpoint_sha256: str
    size_bytes: int
    seconds: float
    verification: dict[str, Any] | None
    report_path: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "variant": self.variant,
            "opset": self.opset,
            "exporter": self.exporter,
            "dynamic_batch": self.dynamic_batch,
            "trace_batch": self.trace_batch,
            "source_checkpoint_sha256": self.source_checkpoint_sha256,
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 3),
            "verification": self.verification,
            "report_path": str(self.report_path) if self.report_path else None,
        }


def exporter_name(exporter: str) -> str:
    """The exporter as recorded in the metadata, with the torch version."""
    return f"torch.onnx {exporter} (torch {torch.__version__})"


def export_onnx(
    checkpoint: str | Path,
    output: str | Path,
    *,
    dynamic_batch: bool = True,
    static_batch: int = 1,
    variant: str = DEFAULT_VARIANT,
    opset: int = DEFAULT_OPSET,
    exporter: str = DEFAULT_EXPORTER,
    verify: bool = True,
    verify_batch: int | None = None,
    end2end_settings: PostprocessSettings | str = END2END_SETTINGS[0],
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> ExportReport:
    """Export ``checkpoint`` to ``output`` (one ONNX file) and, by default, prove parity.

    Args:
        dynamic_batch: a symbolic batch dimension ``batch``; else the batch is fixed to ``static_batch``.
        variant: ``fp32`` (input images float32 (N, 3, S, S) normalized RGB -> locs (N, P, 4), class_logits
            (N, P, C)); ``fp16`` (same I/O, FP16 inside, L2 norm in FP32); ``uint8-nhwc`` (input uint8
            (N, S, S, 3) RGB, normalization in the graph); ``end2end`` (float32 input -> padded boxes,
            scores, labels, num_detections after softmax, decode and ONNX NonMaxSuppression).
        opset: ONNX opset (default 19; >= 13 for the end-to-end variant).
        exporter: ``torchscript`` (default) or ``dynamo``.
        verify: run :func:`ssd_export.onnx.verify.verify_onnx` before the file is moved into place, and save
            its report beside the output as ``<output>.verify.json``.
        verify_batch: batch size of the verification (default: 3 for a dynamic batch, else the static one).
        end2end_settings: postprocess settings baked into the end-to-end graph: settings, or the name of
            the spec's ``"detection"`` (the default) or ``"evaluation"`` settings (for its mAP).
        max_candidates: end2end only - per-image cap on (class, prior) candidates entering the NMS.

    Raises ExportError (export/check failure), End2EndLimitError (``top_k`` or ``max_candidates`` needing a
    TopK k > 3840), TensorRTRuleError (the graph breaks a TensorRT parser rule) or ParityError (verification
    failed; ``.report`` has the details); in every case nothing is written.
    """
    start = time.perf_counter()
    _check_arguments(variant, exporter, dynamic_batch, static_batch, opset)
    checkpoint = Path(checkpoint)
    output = Path(output)
    source_sha = sha256_file(checkpoint) if checkpoint.is_file() else ""
    model, spec = load_model(checkpoint)
    trace_batch = TRACE_BATCH if dynamic_batch else static_batch
    e2e = _end2end_config(spec, end2end_settings, max_candidates) if variant == "end2end" else None
    proto = _exported_graph(model, spec, variant, trace_batch=trace_batch, dynamic_batch=dynamic_batch,
                            static_batch=static_batch, opset=opset, exporter=exporter, e2e=e2e)
    write_onnx_metadata(proto, onnx_metadata(
        spec.with_provenance(source_checkpoint_sha256=source_sha, onnx_variant=variant, onnx_opset=str(opset),
                             onnx_exporter=exporter_name(exporter)),
        variant, source_checkpoint_sha256=source_sha, exporter=exporter_name(exporter), opset=opset,
        trace_batch=trace_batch, end2end=e2e,
    ))
    proto.doc_string = f"SSD300 ({spec.num_classes} classes, width {spec.width}), variant {variant}"
    _check(proto, output)
    # TensorRT's parser rules (ops, UINT8, TopK k, NMS inputs, INT64): refused before anything is written
    require_tensorrt_rules(proto, str(output))
    report, report_path = _save_verified(proto, output, checkpoint, verify, verify_batch)
    return ExportReport(
        output=output, variant=variant, opset=opset, exporter=exporter_name(exporter),
        dynamic_batch=dynamic_batch, trace_batch=trace_batch, source_checkpoint_sha256=source_sha,
        size_bytes=output.stat().st_size, seconds=time.perf_counter() - start,
        verification=report, report_path=report_path,
    )


def _check_arguments(variant: str, exporter: str, dynamic_batch: bool, static_batch: int, opset: int) -> None:
    """Refuse an unknown variant or exporter, a static batch below 1, an end2end export below opset 13."""
    if variant not in VARIANTS:
        raise ExportError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if not dynamic_batch and static_batch < 1:
        raise ExportError(f"static batch must be >= 1, got {static_batch}")
    if variant == "end2end" and opset < 13:
        raise ExportError("the end-to-end variant needs opset >= 13 (ReduceSum with axes input, ScatterND)")


def _exported_graph(model: torch.nn.Module, spec: ModelSpec, variant: str, *, trace_batch: int, dynamic_batch: bool,
                    static_batch: int, opset: int, exporter: str, e2e: End2EndConfig | None) -> onnx.ModelProto:
    """The network traced at ``trace_batch`` as ONNX with its outputs declared: the NMS appended for end2end
    (``e2e``), else locs (N, P, 4) and class_logits (N, P, C) pinned; N is ``batch`` or ``static_batch``."""
    with tempfile.TemporaryDirectory(prefix="ssd-export-") as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        _torch_export(_export_module(model, spec, variant), _trace_input(spec, variant, trace_batch),
                      raw_path, variant, dynamic_batch, opset, exporter)
        proto = onnx.load(str(raw_path))
    batch_dim: int | str = "batch" if dynamic_batch else static_batch
    if e2e is not None:
        return append_nms(proto, e2e.settings, num_priors=spec.num_priors, num_classes=spec.num_classes,
                          max_candidates=e2e.max_candidates, batch=batch_dim)
    _set_output_shapes(proto, batch_dim, spec)
    return proto


def _save_verified(proto: onnx.ModelProto, output: Path, checkpoint: Path, verify: bool,
                   verify_batch: int | None) -> tuple[dict[str, Any] | None, Path | None]:
    """Write ``proto`` beside ``output``, verify it there (when ``verify``) and move it into place; save the
    verification report as ``<output>.verify.json``. Returns (report, report path), both None unverified.

    A failed verification raises :class:`ParityError` and leaves nothing written."""
    report = None
    with atomic_path(output) as tmp_path:
        onnx.save(proto, str(tmp_path))
        if verify:
            report = verify_onnx(tmp_path, checkpoint, batch_size=verify_batch)
            report["onnx"] = str(output)
            if not report["passed"]:
                raise ParityError(
                    f"parity check failed for {output} ({'; '.join(report['failures'])}); nothing was written",
                    report,
                )
    if report is None:
        return None, None
    report_path = output.with_name(output.name + ".verify.json")
    write_report(report, report_path)
    return report, report_path


def _export_module(model: torch.nn.Module, spec: ModelSpec, variant: str) -> torch.nn.Module:
    if model.norm != "none":  # BatchNorms become conv weights; the caller's model is left as it is
        model = copy.deepcopy(model).eval().fold_norms()
    if variant == "fp16":
        return FP16Network(model).eval()
    if variant == "uint8-nhwc":
        return Uint8NHWCInput(model, spec).eval()
    if variant == "end2end":
        return ScoresAndBoxes(model, spec).eval()
    return model.eval()


def _trace_input(spec: ModelSpec, variant: str, batch: int) -> torch.Tensor:
    """Seeded random tracing input (verification uses other images)."""
    generator = torch.Generator().manual_seed(TRACE_SEED)
    size = spec.input_size
    if variant == "uint8-nhwc":
        return torch.randint(0, 256, (batch, size, size, 3), generator=generator, dtype=torch.uint8)
    return torch.randn(batch, 3, size, size, generator=generator)


def _torch_export(
    module: torch.nn.Module, example: torch.Tensor, path: Path, variant: str, dynamic_batch: bool, opset: int,
    exporter: str,
) -> None:
    output_names = ["boxes", "scores"] if variant == "end2end" else list(VARIANT_IO[variant][1])
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            if exporter == "dynamo":
                dynamic_shapes = {"images": {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
                program = torch.onnx.export(
                    module, (example,), input_names=["images"], output_names=output_names,
                    opset_version=opset, dynamo=True, external_data=False, dynamic_shapes=dynamic_shapes,
                    verbose=False,
                )
                program.save(str(path), external_data=False)
            else:
                axes = {"images": {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
                torch.onnx.export(
                    module, (example,), str(path), input_names=["images"], output_names=output_names,
                    opset_version=opset, dynamo=False, dynamic_axes=axes if dynamic_batch else None,
                    do_constant_folding=True,
                )
    except Exception as exc:
        raise ExportError(f"torch.onnx ({exporter}) failed to export the {variant} model: {exc}") from exc


def _set_output_shapes(proto: onnx.ModelProto, batch: int | str, spec: ModelSpec) -> None:
    """Pin the declared output shapes: locs (batch, P, 4), class_logits (batch, P, C)."""
    shapes = {"locs": (batch, spec.num_priors, 4), "class_logits": (batch, spec.num_priors, spec.num_classes)}
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, value in zip(dims, shapes[out.name]):
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value


def _check(proto: onnx.ModelProto, output: Path) -> None:
    """ONNX checker (full) and strict shape inference; outputs must keep their declared shapes."""
    try:
        onnx.checker.check_model(proto, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise ExportError(f"{output}: the exported graph fails the ONNX checker/shape inference: {exc}") from exc
    declared = {o.name: o.type.tensor_type.shape for o in proto.graph.output}
    for out in inferred.graph.output:
        if out.type.tensor_type.shape != declared[out.name]:
            raise ExportError(f"{output}: shape inference changed output {out.name!r}")


def _end2end_config(spec: ModelSpec, settings: PostprocessSettings | str, max_candidates: int) -> End2EndConfig:
    """What the end-to-end graph bakes in, refused before the trace where no TensorRT could build it
    (a TopK k > 3840: :class:`~ssd_export.onnx.end2end.End2EndLimitError`)."""
    e2e = End2EndConfig(_end2end_settings(spec, settings), int(max_candidates))
    check_end2end_limits(e2e.settings.top_k, e2e.max_candidates, num_priors=spec.num_priors,
                         num_classes=spec.num_classes)
    return e2e


def _end2end_settings(spec: ModelSpec, settings: PostprocessSettings | str) -> PostprocessSettings:
    """The settings to bake in: given ones, or the spec's named ``detection`` / ``evaluation`` settings."""
    if isinstance(settings, PostprocessSettings):
        return settings
    if settings not in END2END_SETTINGS:
        raise ExportError(f"end2end settings must be one of {', '.join(END2END_SETTINGS)} or PostprocessSettings, "
                          f"got {settings!r}")
    return getattr(spec, settings)
