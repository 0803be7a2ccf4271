"""``ssd-export triton``: every generated config.pbtxt parsed by Triton's own model-config protobuf
(tritonclient's ``model_config_pb2``) and checked field by field, ensembles wired like Triton checks
them, engines read through their sidecar, and the repository written atomically.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import ssd_runtime
from ssd_export.cli import main
from ssd_export.onnx.export import export_onnx
from ssd_export.triton.repository import (
    POSTPROCESS_SOURCE,
    TritonRepositoryError,
    read_served_model,
    write_triton_repository,
)
from ssd_export.triton.config import render_pbtxt
from ssd_runtime.engine_sidecar import (
    SIDECAR_SCHEMA,
    EngineMismatchError,
    EngineSidecar,
    EngineSidecarError,
    read_sidecar,
    write_sidecar,
)
from ssd_runtime.onnx_model import read_onnx_info
from ssd_runtime.spec import ModelSpec

FP32, INT64, UINT8 = mc.TYPE_FP32, mc.TYPE_INT64, mc.TYPE_UINT8


def parse(folder: Path) -> mc.ModelConfig:
    """config.pbtxt -> ModelConfig (text_format rejects unknown fields and bad enum values)."""
    return text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())


def io(tensors) -> list[tuple[str, int, list[int]]]:
    return [(t.name, t.data_type, list(t.dims)) for t in tensors]


def check_ensemble(root: Path, ensemble: mc.ModelConfig) -> None:
    """The wiring checks Triton makes when it loads an ensemble: every step's maps name real tensors of the
    step's model, each ensemble tensor is produced once before it is consumed, types and dims agree."""
    tensors = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = parse(root / step.model_name)
        assert model.max_batch_size >= ensemble.max_batch_size
        model_inputs = {t.name: (t.data_type, list(t.dims)) for t in model.input}
        assert set(step.input_map) == set(model_inputs)
        for model_input, ensemble_tensor in step.input_map.items():
            assert tensors[ensemble_tensor] == model_inputs[model_input], (step.model_name, model_input)
        model_outputs = {t.name: (t.data_type, list(t.dims)) for t in model.output}
        for model_output, ensemble_tensor in step.output_map.items():
            assert ensemble_tensor not in tensors, f"{ensemble_tensor} produced twice"
            tensors[ensemble_tensor] = model_outputs[model_output]
    for output in ensemble.output:
        assert tensors[output.name] == (output.data_type, list(output.dims)), output.name


@pytest.fixture(scope="module")
def variants(runtime_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """uint8-nhwc and end2end exports, and an fp32 one with a static batch of 2 (not verified: parity is tested elsewhere)."""
    folder = tmp_path_factory.mktemp("triton_variants")
    out = {}
    for variant in ("uint8-nhwc", "end2end"):
        out[variant] = folder / f"{variant}.onnx"
        export_onnx(runtime_checkpoint, out[variant], variant=variant, verify=False)
    out["static"] = folder / "static.onnx"
    export_onnx(runtime_checkpoint, out["static"], dynamic_batch=False, static_batch=2, verify=False)
    return out


def test_onnx_repository_configs(runtime_onnx: Path, tmp_path: Path):
    spec = read_onnx_info(runtime_onnx).spec
    p, c, k = spec.num_priors, spec.num_classes, spec.detection.top_k
    root = tmp_path / "model_repository"
    repo = write_triton_repository(runtime_onnx, root)
    assert sorted(p.name for p in root.iterdir()) == ["ssd300", "ssd300_network", "ssd300_postprocess"]
    assert repo.entry_model == "ssd300" and repo.max_batch_size == 8 and repo.max_detections == k

    network = parse(root / "ssd300_network")
    assert (network.name, network.platform, network.backend, network.max_batch_size) == (
        "ssd300_network", "onnxruntime_onnx", "", 8)
    assert io(network.input) == [("images", FP32, [3, 300, 300])]
    assert io(network.output) == [("locs", FP32, [p, 4]), ("class_logits", FP32, [p, c])]
    assert network.HasField("dynamic_batching")
    assert list(network.dynamic_batching.preferred_batch_size) == []
    assert network.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.count, g.kind, list(g.gpus)) for g in network.instance_group] == [(1, mc.ModelInstanceGroup.KIND_CPU, [])]
    assert (root / "ssd300_network/1/model.onnx").read_bytes() == runtime_onnx.read_bytes()

    post = parse(root / "ssd300_postprocess")
    assert (post.name, post.backend, post.platform, post.max_batch_size) == ("ssd300_postprocess", "python", "", 8)
    assert io(post.input) == [("locs", FP32, [p, 4]), ("class_logits", FP32, [p, c])]
    assert io(post.output) == [("boxes", FP32, [k, 4]), ("scores", FP32, [k]), ("labels", INT64, [k]),
                               ("num_detections", INT64, [1])]
    assert post.HasField("dynamic_batching") and post.dynamic_batching.max_queue_delay_microseconds == 0
    assert [(g.count, g.kind) for g in post.instance_group] == [(1, mc.ModelInstanceGroup.KIND_CPU)]
    assert (root / "ssd300_postprocess/1/model.py").read_bytes() == POSTPROCESS_SOURCE.read_bytes()
    assert ModelSpec.from_json((root / "ssd300_postprocess/1/spec.json").read_text()) == spec

    ensemble = parse(root / "ssd300")
    assert (ensemble.name, ensemble.platform, ensemble.max_batch_size) == ("ssd300", "ensemble", 8)
    assert not ensemble.instance_group and not ensemble.HasField("dynamic_batching")
    assert io(ensemble.input) == [("images", FP32, [3, 300, 300])]
    assert io(ensemble.output) == io(post.output)
    steps = ensemble.ensemble_scheduling.step
    assert [(s.model_name, s.model_version) for s in steps] == [("ssd300_network", -1), ("ssd300_postprocess", -1)]
    assert dict(steps[0].input_map) == {"images": "images"}
    assert dict(steps[0].output_map) == {"locs": "locs", "class_logits": "class_logits"}
    assert dict(steps[1].input_map) == {"locs": "locs", "class_logits": "class_logits"}
    assert dict(steps[1].output_map) == {n: n for n in ("boxes", "scores", "labels", "num_detections")}
    # the ensemble's version folder holds a placeholder: an empty folder is lost by git and object stores,
    # and an ensemble without a version folder does not load (the real-server test serves a files-only copy)
    assert [f.name for f in (root / "ssd300/1").iterdir()] == ["README.txt"]
    assert "version folder" in (root / "ssd300/1/README.txt").read_text()
    # the toolkit that wrote it, checked by model.py's initialize against the server's ssd_runtime
    assert json.loads((root / "ssd300_postprocess/1/toolkit.json").read_text()) == {
        "ssd300_toolkit_version": ssd_runtime.__version__}
    check_ensemble(root, ensemble)


def test_batching_and_instance_options(runtime_onnx: Path, tmp_path: Path):
    root = tmp_path / "repo"
    write_triton_repository(runtime_onnx, root, name="detector", max_batch=16, preferred_batch_sizes=(4, 16),
                            max_queue_delay_us=500, instances=2, gpus=(0, 1), postprocess_instances=3, max_detections=50)
    network = parse(root / "detector_network")
    assert network.max_batch_size == 16
    assert list(network.dynamic_batching.preferred_batch_size) == [4, 16]
    assert network.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind, list(g.gpus)) for g in network.instance_group] == [(2, mc.ModelInstanceGroup.KIND_GPU, [0, 1])]
    post = parse(root / "detector_postprocess")
    assert [(g.count, g.kind) for g in post.instance_group] == [(3, mc.ModelInstanceGroup.KIND_CPU)]
    assert io(post.output)[0] == ("boxes", FP32, [50, 4])
    ensemble = parse(root / "detector")
    assert ensemble.max_batch_size == 16 and ensemble.ensemble_scheduling.step[0].model_name == "detector_network"
    check_ensemble(root, ensemble)
    with pytest.raises(TritonRepositoryError, match=r"preferred-batch-sizes \[32\] are outside 1..16"):
        write_triton_repository(runtime_onnx, tmp_path / "bad", max_batch=16, preferred_batch_sizes=(32,))
    assert not (tmp_path / "bad").exists()


def test_uint8_nhwc_ensemble_takes_uint8_images(variants: dict[str, Path], tmp_path: Path):
    write_triton_repository(variants["uint8-nhwc"], tmp_path / "r")
    assert io(parse(tmp_path / "r/ssd300_network").input) == [("images", UINT8, [300, 300, 3])]
    ensemble = parse(tmp_path / "r/ssd300")
    assert io(ensemble.input) == [("images", UINT8, [300, 300, 3])]
    check_ensemble(tmp_path / "r", ensemble)


def test_end2end_is_served_alone(variants: dict[str, Path], tmp_path: Path):
    repo = write_triton_repository(variants["end2end"], tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["ssd300"]
    config = parse(tmp_path / "r/ssd300")
    assert (config.platform, config.max_batch_size) == ("onnxruntime_onnx", 8)
    k = repo.max_detections
    assert io(config.output) == [("boxes", FP32, [k, 4]), ("scores", FP32, [k]), ("labels", INT64, [k]),
                                 ("num_detections", INT64, [1])]
    # the graph's num_detections is (N,): one value per image, reshaped from Triton's dims [1]
    reshapes = {o.name: (o.HasField("reshape"), list(o.reshape.shape)) for o in config.output}
    assert reshapes["num_detections"] == (True, []) and reshapes["scores"] == (False, [])
    assert (tmp_path / "r/ssd300/1/model.onnx").is_file()
    with pytest.raises(TritonRepositoryError, match="top_k 200 baked in"):
        write_triton_repository(variants["end2end"], tmp_path / "r2", max_detections=100)


def test_static_batch_is_served_without_batching(variants: dict[str, Path], runtime_onnx: Path, tmp_path: Path):
    spec = read_onnx_info(runtime_onnx).spec
    repo = write_triton_repository(variants["static"], tmp_path / "r")
    assert repo.max_batch_size == 0 and repo.static_batch == 2 and "static batch 2" in repo.notes[0]
    network, post, ensemble = (parse(tmp_path / "r" / n) for n in ("ssd300_network", "ssd300_postprocess", "ssd300"))
    for config in (network, post, ensemble):
        assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert io(network.input) == [("images", FP32, [2, 3, 300, 300])]
    assert io(network.output)[0] == ("locs", FP32, [2, spec.num_priors, 4])
    assert io(ensemble.output)[3] == ("num_detections", INT64, [2, 1])
    check_ensemble(tmp_path / "r", ensemble)
    with pytest.raises(TritonRepositoryError, match="static batch of 2"):
        write_triton_repository(variants["static"], tmp_path / "r2", max_batch=4)


def make_engine(folder: Path, onnx_path: Path, *, output_kind: str = "raw", min_batch: int = 1,
                output_dtype: str | None = None, version_compatible: bool = False) -> Path:
    """A plan of arbitrary bytes with the sidecar `ssd-export engine` would write for ``onnx_path`` (only copied);
    ``output_dtype`` replaces the outputs' dtype (an engine whose outputs stay in FP16)."""
    served = read_served_model(onnx_path)
    if output_dtype is not None:
        served = replace(served, outputs=[replace(t, dtype=output_dtype) for t in served.outputs])
    plan = folder / "model fp16.engine"
    plan.write_bytes(b"plan bytes: Triton loads them, the repository writer only copies them")

    def entries(tensors):
        return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in tensors]

    size = served.spec.input_size
    write_sidecar(plan, EngineSidecar(
        schema_version=SIDECAR_SCHEMA, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
        cuda_version="12.6", precision="fp16", variant=served.variant, fp16_flag=True, strongly_typed=False,
        profile={"images": {"min": [min_batch, 3, size, size], "opt": [4, 3, size, size], "max": [16, 3, size, size]}},
        version_compatible=version_compatible, hardware_compatibility="none", inputs=entries(served.inputs),
        outputs=entries(served.outputs), output_kind=output_kind, spec=served.spec.to_dict(),
        onnx_sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        plan_sha256=hashlib.sha256(plan.read_bytes()).hexdigest(), built_at="2026-11-30T06:00:00+00:00",
        build_seconds=60.0, build_command=["ssd-export", "engine", "--onnx", str(onnx_path), "-o", str(plan)],
        parity=None, end2end=None if output_kind == "raw" else read_onnx_info(onnx_path).end2end.to_dict(),
    ))
    return plan


def test_engine_repository_from_its_sidecar(runtime_onnx: Path, tmp_path: Path):
    plan = make_engine(tmp_path, runtime_onnx)
    repo = write_triton_repository(plan, tmp_path / "r")
    assert repo.kind == "plan" and repo.max_batch_size == 16  # the profile's max
    assert any("TensorRT 10.3.0" in note for note in repo.notes)
    network = parse(tmp_path / "r/ssd300_network")
    assert (network.platform, network.max_batch_size) == ("tensorrt_plan", 16)
    onnx_network = read_served_model(runtime_onnx)
    assert io(network.input) == [("images", FP32, list(onnx_network.inputs[0].shape[1:]))]
    assert [(g.count, g.kind, list(g.gpus)) for g in network.instance_group] == [(1, mc.ModelInstanceGroup.KIND_GPU, [])]
    assert (tmp_path / "r/ssd300_network/1/model.plan").read_bytes() == plan.read_bytes()
    assert read_sidecar(tmp_path / "r/ssd300_network/1/model.plan") == read_sidecar(plan)
    assert ModelSpec.from_json((tmp_path / "r/ssd300_postprocess/1/spec.json").read_text()) == onnx_network.spec
    check_ensemble(tmp_path / "r", parse(tmp_path / "r/ssd300"))

    write_triton_repository(plan, tmp_path / "r8", max_batch=8, gpus=(1,))
    network = parse(tmp_path / "r8/ssd300_network")
    assert network.max_batch_size == 8 and list(network.instance_group[0].gpus) == [1]
    with pytest.raises(TritonRepositoryError, match=r"exceeds the engine profile's largest batch 16.*ssd-export engine"):
        write_triton_repository(plan, tmp_path / "r32", max_batch=32)


def test_version_compatible_engine_note_names_the_backend_option(runtime_onnx: Path, tmp_path: Path):
    plan = make_engine(tmp_path, runtime_onnx, version_compatible=True)
    repo = write_triton_repository(plan, tmp_path / "r")
    note = next(n for n in repo.notes if "TensorRT 10.3.0" in n)
    assert "--backend-config=tensorrt,version-compatible=true" in note and "must be that version" not in note
    plain = write_triton_repository(make_engine(tmp_path, runtime_onnx), tmp_path / "p")
    assert not any("version-compatible" in n for n in plain.notes)


def test_fp16_engine_outputs_reach_the_postprocess_as_fp16(runtime_onnx: Path, tmp_path: Path):
    write_triton_repository(make_engine(tmp_path, runtime_onnx, output_dtype="float16"), tmp_path / "r")
    network, post = parse(tmp_path / "r/ssd300_network"), parse(tmp_path / "r/ssd300_postprocess")
    assert [t.data_type for t in network.output] == [t.data_type for t in post.input] == [mc.TYPE_FP16] * 2
    assert [t.data_type for t in post.output] == [FP32, FP32, INT64, INT64]
    check_ensemble(tmp_path / "r", parse(tmp_path / "r/ssd300"))


def test_engine_problems_are_refused(runtime_onnx: Path, tmp_path: Path):
    lone = tmp_path / "lone.engine"
    lone.write_bytes(b"a plan without its sidecar")
    with pytest.raises(EngineSidecarError, match=r"lone\.engine\.json.*ssd-export engine"):
        write_triton_repository(lone, tmp_path / "r")
    plan = make_engine(tmp_path, runtime_onnx)
    plan.write_bytes(plan.read_bytes() + b"tampered")
    with pytest.raises(EngineMismatchError, match="sha256"):
        write_triton_repository(plan, tmp_path / "r")
    folder = tmp_path / "min2"
    folder.mkdir()
    with pytest.raises(TritonRepositoryError, match="starts at batch 2"):
        write_triton_repository(make_engine(folder, runtime_onnx, min_batch=2), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_end2end_engine_is_served_alone(variants: dict[str, Path], tmp_path: Path):
    plan = make_engine(tmp_path, variants["end2end"], output_kind="detections")
    write_triton_repository(plan, tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["ssd300"]
    config = parse(tmp_path / "r/ssd300")
    assert config.platform == "tensorrt_plan"
    assert [o.name for o in config.output] == ["boxes", "scores", "labels", "num_detections"]


def test_existing_output_is_refused_or_replaced_whole(runtime_onnx: Path, tmp_path: Path, monkeypatch):
    root = tmp_path / "repo"
    (root / "old_model" / "1").mkdir(parents=True)
    (root / "old_model" / "config.pbtxt").write_text('name: "old_model"\n')
    with pytest.raises(TritonRepositoryError, match="not empty.*--force"):
        write_triton_repository(runtime_onnx, root)
    assert [p.name for p in root.iterdir()] == ["old_model"]

    # a failure half-way (the postprocess source missing) leaves the user's folder and no temporary behind
    monkeypatch.setattr("ssd_export.triton.repository.POSTPROCESS_SOURCE", tmp_path / "missing.py")
    with pytest.raises(FileNotFoundError):
        write_triton_repository(runtime_onnx, root, force=True)
    assert [p.name for p in root.iterdir()] == ["old_model"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    monkeypatch.undo()

    write_triton_repository(runtime_onnx, root, force=True)  # the old repository goes as a whole
    assert sorted(p.name for p in root.iterdir()) == ["ssd300", "ssd300_network", "ssd300_postprocess"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]

    # --force never wipes a folder holding anything but model folders (a mistyped --out)
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("keep me")
    with pytest.raises(TritonRepositoryError, match="notes.txt, which are not Triton model folders"):
        write_triton_repository(runtime_onnx, project, force=True)
    assert [p.name for p in project.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_triton_repository(runtime_onnx, empty)  # an empty folder is fine
    assert (empty / "ssd300" / "config.pbtxt").is_file()


def test_checkpoint_and_bad_names_are_refused(runtime_checkpoint: Path, runtime_onnx: Path, tmp_path: Path):
    with pytest.raises(TritonRepositoryError, match="not a checkpoint"):
        write_triton_repository(runtime_checkpoint, tmp_path / "r")
    with pytest.raises(TritonRepositoryError, match="plain folder name"):
        write_triton_repository(runtime_onnx, tmp_path / "r", name="a/b")


def test_render_pbtxt_escapes_strings():
    config = text_format.Parse(render_pbtxt({"name": 'a"b\\c', "max_batch_size": 0}), mc.ModelConfig())
    assert config.name == 'a"b\\c'


def test_cli_writes_and_reports(runtime_onnx: Path, tmp_path: Path, capsys):
    assert main(["triton", "--model", str(runtime_onnx), "--out", str(tmp_path / "r"), "--json",
                 "--gpus", "0", "--preferred-batch-sizes", "2", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["entry_model"] == "ssd300" and report["max_batch_size"] == 8
    assert list(parse(tmp_path / "r/ssd300_network").dynamic_batching.preferred_batch_size) == [2, 4]
    assert main(["triton", "--model", str(runtime_onnx), "--out", str(tmp_path / "r")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["triton", "--model", str(runtime_onnx), "--out", str(tmp_path / "r"), "--force"]) == 0
    out = capsys.readouterr().out
    assert "clients call 'ssd300'" in out and "tritonserver --model-repository=" in out
