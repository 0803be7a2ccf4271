"""A Triton Inference Server model repository from a toolkit ONNX model or TensorRT engine.

Layout written by :func:`write_triton_repository` (``NAME`` defaults to ``ssd300``)::

    OUT/
      NAME/config.pbtxt                 ensemble: images in, final detections out (what clients call)
      NAME/1/README.txt                 a placeholder: Triton wants a version folder for ensembles too, and
                                        an empty one is lost by git and object stores (S3, GCS, Azure)
      NAME_network/config.pbtxt         onnxruntime_onnx or tensorrt_plan: images -> locs, class_logits
      NAME_network/1/model.onnx         (or model.plan and model.plan.json, the engine's sidecar)
      NAME_postprocess/config.pbtxt     Python backend: decode + NMS by ssd_runtime's NumPy postprocess
      NAME_postprocess/1/model.py       (ssd_export/triton/postprocess_model.py)
      NAME_postprocess/1/spec.json      the model spec read from the ONNX metadata or the sidecar
      NAME_postprocess/1/toolkit.json   the toolkit version that wrote it (model.py checks it on loading)

An ``end2end`` model (NMS inside the graph) is served alone as ``NAME`` (network only): its outputs
already are the final detections. Either way clients receive the same tensors, padded to a fixed
``K`` per image: ``boxes`` float32 (K, 4) fractional xyxy, ``scores`` float32 (K,), ``labels`` int64
(K,) (-1 past the count), ``num_detections`` int64 (1,) per image.

The repository is written into a temporary folder beside ``out`` and moved into place at the end: an
interrupted run leaves nothing half-written, and an existing non-empty ``out`` is only replaced with
``force=True``, as a whole (never file by file), and only when it holds nothing but model folders.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ssd_export.defaults import (
    DEFAULT_TRITON_MAX_BATCH,
    DEFAULT_TRITON_NAME,
    DEFAULT_TRITON_QUEUE_DELAY_US,
)
from ssd_export.triton.config import (
    TensorSpec,
    ensemble_config,
    network_config,
    postprocess_config,
    render_pbtxt,
)
from ssd_runtime import __version__ as TOOLKIT_VERSION
from ssd_runtime.backends import resolve_backend
from ssd_runtime.engine_sidecar import EngineSidecar
from ssd_runtime.fileio import atomic_path, atomic_write_bytes
from ssd_runtime.spec import ModelSpec
# the postprocess's inputs (the network's raw outputs) and padded outputs; each variant's output kind
from ssd_runtime.variants import DETECTION_OUTPUTS, RAW_OUTPUTS, VARIANT_TABLE

__all__ = ["ServedModel", "TritonRepository", "TritonRepositoryError", "read_served_model", "write_triton_repository"]

#: The Python-backend model copied as ``NAME_postprocess/1/model.py``.
POSTPROCESS_SOURCE = Path(__file__).with_name("postprocess_model.py")
#: Beside model.py: the spec the postprocess reads (ModelSpec JSON).
SPEC_FILE = "spec.json"
#: Beside model.py: the toolkit version that wrote the repository; model.py refuses another ssd_runtime.
TOOLKIT_FILE = "toolkit.json"
#: In the ensemble's otherwise empty version folder. Triton needs the folder ("at least one version must
#: be available"), and git and object-store copies (S3, GCS, Azure) drop empty folders.
ENSEMBLE_PLACEHOLDER = "README.txt"
ENSEMBLE_PLACEHOLDER_TEXT = (
    "Version 1 of this Triton ensemble. An ensemble has no model file, but Triton loads only models with\n"
    "a version folder; this file keeps the folder when the repository is copied by git or to an object store.\n"
)


class TritonRepositoryError(ValueError):
    """The model cannot be served as asked, or the output folder cannot be written."""


@dataclass(frozen=True)
class ServedModel:
    """What the repository needs to know about the model file.

    kind: "onnx" | "plan"; inputs/outputs: full shapes, batch first (-1: dynamic);
    output_kind: "raw" (locs, class_logits) or "detections" (an end2end graph's padded detections);
    static_batch: the graph's fixed batch size (None: dynamic); max_batch: the engine profile's
    largest batch (None: no limit, ONNX); sidecar: the engine's (None for ONNX).
    """

    path: Path
    kind: str
    spec: ModelSpec
    variant: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    output_kind: str
    static_batch: int | None
    max_batch: int | None = None
    sidecar: EngineSidecar | None = None


def read_served_model(path: str | os.PathLike) -> ServedModel:
    """An ONNX export (``.onnx``) or a TensorRT engine with its sidecar (``.engine``/``.plan``) -> :class:`ServedModel`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    backend = resolve_backend(path)
    if backend == "onnxruntime":
        return _read_onnx(path)
    if backend == "tensorrt":
        return _read_plan(path)
    raise TritonRepositoryError(
        f"{path}: Triton serves the ONNX export or a TensorRT engine, not a checkpoint; export it first "
        "(ssd-export onnx --model C -o model.onnx)"
    )


def _read_onnx(path: Path) -> ServedModel:
    import onnx
    from onnx import helper

    from ssd_runtime.onnx_model import check_external_data, read_onnx_info

    info = read_onnx_info(path)  # refuses unsafe external data before anything is loaded
    if check_external_data(path):
        raise TritonRepositoryError(
            f"{path} keeps tensors in external data files; Triton loads one model.onnx: re-export it as a "
            "single file (ssd-export onnx)"
        )
    graph = onnx.load(str(path), load_external_data=False).graph

    def tensors(values) -> list[TensorSpec]:
        specs = []
        for value in values:
            tensor_type = value.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
            specs.append(TensorSpec(value.name, helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name, dims))
        return specs

    initializers = {i.name for i in graph.initializer}
    inputs = tensors([i for i in graph.input if i.name not in initializers])
    outputs = tensors(graph.output)
    batch = inputs[0].shape[0]
    return ServedModel(
        path=path, kind="onnx", spec=info.spec, variant=info.variant, inputs=inputs, outputs=outputs,
        output_kind=VARIANT_TABLE[info.variant].output_kind,
        static_batch=None if batch == -1 else batch,
    )


def _read_plan(path: Path) -> ServedModel:
    from ssd_runtime.engine_sidecar import check_sidecar, read_sidecar

    sidecar = read_sidecar(path)
    # The serving machine's TensorRT and GPU are unknown here: only the plan's hash is checked (passing
    # the sidecar's own versions); Triton's TensorRT must be the build's (docs/serving.md).
    check_sidecar(sidecar, path.read_bytes(), tensorrt_version=sidecar.tensorrt_version,
                  compute_capability=sidecar.compute_capability, engine_path=path)

    def tensors(entries: list) -> list[TensorSpec]:
        return [TensorSpec(str(e["name"]), str(e["dtype"]), tuple(int(d) for d in e["shape"])) for e in entries]

    inputs, outputs = tensors(sidecar.inputs), tensors(sidecar.outputs)
    batch = inputs[0].shape[0]
    max_batch = None
    if batch == -1:
        profile = sidecar.profile.get(inputs[0].name)
        if profile is None:
            raise TritonRepositoryError(f"{path}: its sidecar has no profile for the input {inputs[0].name!r}")
        if int(profile["min"][0]) != 1:
            raise TritonRepositoryError(
                f"{path}: the engine's profile starts at batch {profile['min'][0]}, but Triton's dynamic batcher "
                f"sends any batch from 1 up; rebuild it with a minimum batch of 1: {sidecar.rebuild_command}"
            )
        max_batch = int(profile["max"][0])
    return ServedModel(
        path=path, kind="plan", spec=sidecar.model_spec(), variant=sidecar.variant, inputs=inputs,
        outputs=outputs, output_kind=sidecar.output_kind, static_batch=None if batch == -1 else batch,
        max_batch=max_batch, sidecar=sidecar,
    )


@dataclass
class TritonRepository:
    """What :func:`write_triton_repository` wrote (plain data via :meth:`to_dict`).

    entry_model: the model clients call; models: every model's folder; max_batch_size: 0 for a static
    batch; max_detections: K, the padded detections per image.
    """

    root: Path
    source: Path
    kind: str
    variant: str
    entry_model: str
    models: dict[str, Path]
    max_batch_size: int
    max_detections: int
    static_batch: int | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "root": str(self.root), "source": str(self.source), "kind": self.kind, "variant": self.variant,
            "entry_model": self.entry_model, "models": {k: str(v) for k, v in self.models.items()},
            "max_batch_size": self.max_batch_size, "max_detections": self.max_detections,
            "static_batch": self.static_batch, "notes": list(self.notes),
        }


def write_triton_repository(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str = DEFAULT_TRITON_NAME,
    max_batch: int | None = None,
    preferred_batch_sizes: tuple[int, ...] = (),
    max_queue_delay_us: int = DEFAULT_TRITON_QUEUE_DELAY_US,
    instances: int = 1,
    gpus: tuple[int, ...] | None = None,
    postprocess_instances: int = 1,
    max_detections: int | None = None,
    force: bool = False,
) -> TritonRepository:
    """Write a Triton model repository serving ``model`` (see the module docstring for the layout).

    max_batch: Triton's max_batch_size (default: the engine profile's max, or
    :data:`~ssd_export.defaults.DEFAULT_TRITON_MAX_BATCH` for a dynamic-batch ONNX); a static-batch
    graph is served with max_batch_size 0 and takes exactly its batch per request.
    gpus: GPU ids for KIND_GPU instance groups (None: ONNX on the CPU; a plan on every GPU).
    max_detections: K, detections per image in the padded outputs (default: the spec's detection top_k;
    a request's ``top_k`` may not exceed it). For an end2end model it is the graph's own top_k.
    """
    served = read_served_model(model)
    out = Path(out).resolve()  # "." or "repo/" still name a folder with a parent to build beside
    _check_out(out, force)
    _check_name(name)
    if instances < 1 or postprocess_instances < 1:
        raise TritonRepositoryError("--instances and --postprocess-instances must be at least 1")
    batching = _max_batch_size(served, max_batch, preferred_batch_sizes)
    notes = []
    if served.static_batch is not None:
        notes.append(
            f"static batch {served.static_batch}: served with max_batch_size 0 (no dynamic batching); every "
            f"request carries exactly {served.static_batch} images (re-export with a dynamic batch to batch requests)"
        )
    if served.kind == "plan":
        notes.append(plan_note(served.sidecar))

    network_name = name if served.output_kind == "detections" else f"{name}_network"
    configs = {network_name: network_config(
        network_name, "onnxruntime_onnx" if served.kind == "onnx" else "tensorrt_plan", served.inputs,
        served.outputs, max_batch_size=batching, preferred_batch_sizes=tuple(preferred_batch_sizes),
        max_queue_delay_us=max_queue_delay_us, instances=instances, gpus=tuple(gpus) if gpus is not None else None,
    )}
    if served.output_kind == "detections":
        k = served.outputs[[o.name for o in served.outputs].index("scores")].shape[1]
        if max_detections is not None and max_detections != k:
            raise TritonRepositoryError(
                f"{served.path} is an end2end graph with top_k {k} baked in; --max-detections cannot change it "
                "(re-export it, or serve the fp32 variant with the Python postprocess)"
            )
    else:
        k = served.spec.detection.top_k if max_detections is None else int(max_detections)
        if k < 1:
            raise TritonRepositoryError(f"--max-detections must be at least 1, got {k}")
        configs.update(_postprocess_models(served, name, network_name, batching, k, postprocess_instances))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for model_name, config in configs.items():
            (tmp / model_name / "1").mkdir(parents=True)
            atomic_write_bytes(tmp / model_name / "config.pbtxt", render_pbtxt(config).encode("utf-8"))
        version = tmp / network_name / "1"
        with atomic_path(version / f"model.{served.kind}") as target:
            shutil.copyfile(served.path, target)
        if served.kind == "plan":
            from ssd_runtime.engine_sidecar import write_sidecar

            write_sidecar(version / "model.plan", served.sidecar)
        if served.output_kind == "raw":
            post = tmp / f"{name}_postprocess" / "1"
            atomic_write_bytes(post / "model.py", POSTPROCESS_SOURCE.read_bytes())
            atomic_write_bytes(post / SPEC_FILE, served.spec.to_json().encode("utf-8"))
            toolkit = {"ssd300_toolkit_version": TOOLKIT_VERSION}
            atomic_write_bytes(post / TOOLKIT_FILE, (json.dumps(toolkit, indent=2) + "\n").encode("utf-8"))
            atomic_write_bytes(tmp / name / "1" / ENSEMBLE_PLACEHOLDER, ENSEMBLE_PLACEHOLDER_TEXT.encode("utf-8"))
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TritonRepository(
        root=out, source=served.path, kind=served.kind, variant=served.variant, entry_model=name,
        models={m: out / m for m in configs}, max_batch_size=batching, max_detections=k,
        static_batch=served.static_batch, notes=notes,
    )


def plan_note(sidecar: EngineSidecar) -> str:
    """What Triton's TensorRT must be for this plan; a version-compatible plan needs a backend option."""
    built = f"TensorRT plan built with TensorRT {sidecar.tensorrt_version} for compute capability {sidecar.compute_capability}"
    if not sidecar.version_compatible:
        return f"{built}: Triton's TensorRT must be that version"
    # tensorrt_backend loads a version-compatible plan only with this option (its README, "Command line
    # options": version-compatible; src/loader.cc sets engine_host_code_allowed from it)
    return (f"{built}, version-compatible: Triton's TensorRT may be that version or a later one of the same major "
            "(10.x plans also run on 11.x), and tritonserver must be started with "
            "--backend-config=tensorrt,version-compatible=true (without it the plan does not load)")


def _postprocess_models(
    served: ServedModel, name: str, network_name: str, batching: int, k: int, instances: int
) -> dict[str, dict]:
    """The Python postprocess and the ensemble around network + postprocess."""
    by_name = {o.name: o for o in served.outputs}
    missing = [n for n in RAW_OUTPUTS if n not in by_name]
    if missing:
        raise TritonRepositoryError(f"{served.path}: expected outputs {list(RAW_OUTPUTS)}, the model has {list(by_name)}")
    batch = -1 if served.static_batch is None else served.static_batch
    raw = [by_name[n] for n in RAW_OUTPUTS]
    # num_detections is (N, 1) here, not (N,): a per-item scalar would need a reshape, which
    # Triton's ensembles have mishandled; clients read num_detections[:, 0] either way
    detections = [
        TensorSpec("boxes", "float32", (batch, k, 4)), TensorSpec("scores", "float32", (batch, k)),
        TensorSpec("labels", "int64", (batch, k)), TensorSpec("num_detections", "int64", (batch, 1)),
    ]
    post_name = f"{name}_postprocess"
    steps = [
        (network_name, {served.inputs[0].name: served.inputs[0].name}, {n: n for n in RAW_OUTPUTS}),
        (post_name, {n: n for n in RAW_OUTPUTS}, {n: n for n in DETECTION_OUTPUTS}),
    ]
    return {
        post_name: postprocess_config(post_name, raw, detections, max_batch_size=batching, instances=instances),
        name: ensemble_config(name, served.inputs[:1], detections, steps, max_batch_size=batching),
    }


def _max_batch_size(served: ServedModel, max_batch: int | None, preferred: tuple[int, ...]) -> int:
    """Triton's max_batch_size for the model (0 for a static batch), checked against what was asked."""
    if served.static_batch is not None:
        if max_batch is not None or preferred:
            raise TritonRepositoryError(
                f"{served.path} has a static batch of {served.static_batch}: it is served without batching "
                "(max_batch_size 0); drop --max-batch-size/--preferred-batch-sizes or re-export with a dynamic batch"
            )
        return 0
    limit = served.max_batch
    value = (limit or DEFAULT_TRITON_MAX_BATCH) if max_batch is None else int(max_batch)
    if value < 1:
        raise TritonRepositoryError(f"--max-batch-size must be at least 1, got {value}")
    if limit is not None and value > limit:
        raise TritonRepositoryError(
            f"{served.path}: --max-batch-size {value} exceeds the engine profile's largest batch {limit}; "
            f"rebuild the engine with a larger profile: {served.sidecar.rebuild_command}"
        )
    bad = [b for b in preferred if not 1 <= int(b) <= value]
    if bad:
        raise TritonRepositoryError(f"--preferred-batch-sizes {bad} are outside 1..{value} (the max batch size)")
    return value


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or any(c in name for c in "/\\ \t\n\""):
        raise TritonRepositoryError(f"model name {name!r} must be a plain folder name (no slashes, quotes or spaces)")


def _check_out(out: Path, force: bool) -> None:
    """``out`` may be new or empty; with ``force`` also a model repository (model folders only), never other files."""
    if out.exists() and not out.is_dir():
        raise TritonRepositoryError(f"{out} exists and is not a folder; choose another --out")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if entries and not force:
        raise TritonRepositoryError(
            f"{out} exists and is not empty; choose another --out, or pass --force to replace it as a whole"
        )
    # --force deletes the old repository: only one made of model folders, so a mistyped --out (a home or
    # project folder) is never wiped
    foreign = [e.name for e in entries if not (e.is_dir() and (e / "config.pbtxt").is_file())]
    if foreign:
        raise TritonRepositoryError(
            f"{out} holds {', '.join(foreign[:5])}, which are not Triton model folders (a folder with a "
            "config.pbtxt); --force only replaces a model repository: choose another --out"
        )


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``; an existing ``out`` is renamed aside first and removed after."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        old.rmdir()
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)  # put the user's folder back
        raise
    if old is not None:
        shutil.rmtree(old)
