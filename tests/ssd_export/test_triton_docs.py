"""docs/serving.md's client examples: valid Python, and they run against a generated repository through a
local stand-in for the server (the ensemble's steps run with ONNX Runtime and the Python postprocess).

The same examples run against a real Triton server in test_triton_server.py (where its environment
exists); this in-process run keeps them checked everywhere. The stand-in replaces ``tritonclient.http``/``.grpc`` with
the few names the examples use (``InferenceServerClient(url).infer(model, inputs, parameters=)``,
``InferInput``, ``result.as_numpy``) and executes the ensemble the way its config.pbtxt wires it.
"""
from __future__ import annotations

import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient

from ssd_export.onnx.export import export_onnx
from ssd_export.triton.repository import write_triton_repository
from ssd_runtime.voc import read_split_ids
from tests.helpers.triton import pb_utils_standin as pb

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"
TRITON_TO_NUMPY = {"UINT8": np.uint8, "FP32": np.float32, "TYPE_UINT8": np.uint8, "TYPE_FP32": np.float32}


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_client_examples_compile():
    blocks = python_blocks()
    assert len(blocks) == 2
    for i, block in enumerate(blocks):
        compile(block, f"docs/serving.md python block {i}", "exec")


class StandInServer:
    """Runs a repository's ensemble in process: ONNX Runtime for onnxruntime_onnx steps, the stand-in for python ones."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def infer(self, model_name: str, tensors: dict[str, np.ndarray], parameters: dict) -> dict[str, np.ndarray]:
        config = pb.model_config(self.root / model_name)
        for declared in config["input"]:
            array = tensors[declared["name"]]
            assert array.dtype == TRITON_TO_NUMPY[declared["data_type"]], declared["name"]
            assert array.shape[1:] == tuple(int(d) for d in declared["dims"])
            assert 1 <= array.shape[0] <= int(config["max_batch_size"])
        if config.get("platform") == "ensemble":
            values = dict(tensors)
            for step in config["ensemble_scheduling"]["step"]:
                inputs = {model_input: values[name] for model_input, name in step["input_map"].items()}
                outputs = self.infer(step["model_name"], inputs, parameters)  # Triton forwards the parameters
                values.update({name: outputs[model_output] for model_output, name in step["output_map"].items()})
            return {o["name"]: values[o["name"]] for o in config["output"]}
        folder = self.root / model_name
        if config.get("platform") == "onnxruntime_onnx":
            session = ort.InferenceSession(str(folder / "1/model.onnx"), providers=["CPUExecutionProvider"])
            return dict(zip([o.name for o in session.get_outputs()], session.run(None, tensors)))
        assert config.get("backend") == "python"
        request = pb.InferenceRequest([pb.Tensor(name, array) for name, array in tensors.items()], parameters)
        response = pb.load_model(folder).execute([request])[0]
        assert not response.has_error(), response.error().message()
        return {t.name(): t.as_numpy() for t in response.output_tensors()}


def stand_in_client_module(name: str, server: StandInServer) -> types.ModuleType:
    """A ``tritonclient.http``/``.grpc`` with InferInput and InferenceServerClient backed by ``server``."""

    class InferInput:
        def __init__(self, name: str, shape: list[int], datatype: str) -> None:
            self.name, self.shape, self.datatype = name, list(shape), datatype

        def set_data_from_numpy(self, array: np.ndarray) -> None:
            assert list(array.shape) == self.shape and array.dtype == TRITON_TO_NUMPY[self.datatype]
            self.array = array

    class Result:
        def __init__(self, outputs: dict[str, np.ndarray]) -> None:
            self.outputs = outputs

        def as_numpy(self, name: str) -> np.ndarray:
            return self.outputs[name]

    class InferenceServerClient:
        def __init__(self, url: str) -> None:
            self.url = url

        def infer(self, model_name: str, inputs: list, parameters: dict | None = None) -> Result:
            return Result(server.infer(model_name, {i.name: i.array for i in inputs}, parameters or {}))

    module = types.ModuleType(name)
    module.InferInput, module.InferenceServerClient = InferInput, InferenceServerClient
    return module


def test_client_examples_run_against_the_repository(runtime_checkpoint: Path, voc_root: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, capsys):
    model = tmp_path / "ssd300_u8.onnx"
    export_onnx(runtime_checkpoint, model, variant="uint8-nhwc", verify=False)
    write_triton_repository(model, tmp_path / "model_repository")
    image_id = read_split_ids(voc_root, "test")[0]
    shutil.copyfile(voc_root / "JPEGImages" / f"{image_id}.jpg", tmp_path / "street.jpg")
    monkeypatch.chdir(tmp_path)
    server = StandInServer(tmp_path / "model_repository")
    for name in ("http", "grpc"):
        module = stand_in_client_module(f"tritonclient.{name}", server)
        monkeypatch.setitem(sys.modules, f"tritonclient.{name}", module)
        monkeypatch.setattr(tritonclient, name, module, raising=False)

    http_block, grpc_block = python_blocks()
    exec(compile(http_block, "docs/serving.md (HTTP client)", "exec"), {})  # noqa: S102 - our own docs
    lines = capsys.readouterr().out.splitlines()
    assert lines, "the example printed no detection: the model must detect something at min_score 0.3"
    spec_names = {line.split()[0] for line in lines}
    assert all(float(line.split()[1]) > 0.3 for line in lines) and spec_names <= set(_class_names(tmp_path))

    exec(compile(grpc_block, "docs/serving.md (gRPC client)", "exec"), {})  # noqa: S102 - our own docs
    counts = capsys.readouterr().out
    assert re.match(r"\[\d+\] \[", counts), counts


def _class_names(root: Path) -> tuple[str, ...]:
    from ssd_runtime.spec import ModelSpec

    return ModelSpec.from_json((root / "model_repository/ssd300_postprocess/1/spec.json").read_text()).class_names


def _pyproject_triton_client_floor() -> tuple[int, ...]:
    import tomllib

    pyproject = tomllib.loads((DOC.parents[1] / "pyproject.toml").read_text())
    (requirement,) = pyproject["project"]["optional-dependencies"]["triton"]
    floor = re.search(r"tritonclient\[[a-z,]*\]>=([\d.]+)", requirement)
    assert floor, requirement
    return tuple(int(x) for x in floor.group(1).split("."))


def test_documented_versions_take_float_parameters():
    """The client examples send min_score 0.3: doubles need server 24.02 (r23.10 http_server.cc takes int, bool,
    string only) and tritonclient 2.43."""
    assert _pyproject_triton_client_floor() >= (2, 43)
    text = DOC.read_text()
    assert re.search(r"Pick the release: 24\.02 or later", text)
    releases = re.findall(r"tritonserver:(\d+)\.(\d+)-py3\b", text)
    assert releases and all((int(y), int(m)) >= (24, 2) for y, m in releases), releases


def test_docker_run_gives_the_python_backend_shared_memory():
    runs = re.findall(r"docker run [^`]*?tritonserver --model-repository", DOC.read_text(), flags=re.DOTALL)
    assert runs and all(re.search(r"--shm-size=\d+[mg]\b", run) for run in runs), runs


def test_offline_recipe_takes_python_and_platform_from_the_image():
    text = DOC.read_text()
    assert "pip download" in text
    assert not re.search(r"--python-version|--platform|manylinux\w*_x86_64", text)
    assert re.search(r"docker run [^`]*tritonserver:[\d.]+-py3 pip download", text)


def test_version_compatible_engines_name_the_backend_option():
    assert "--backend-config=tensorrt,version-compatible=true" in DOC.read_text()
