"""The generated model repository served by a real Triton Inference Server, called with tritonclient.

The server is the ``tritonserver`` 2.51.0 (Triton 24.10) bundled with PyPI's ``nvidia-pytriton``, in its
own environment (``.venv-triton``, numpy<2; tests/helpers/triton/server.py). Marked ``triton``; skipped, with
the reason, where that environment is absent (make it with ``bash scripts/make_triton_env.sh``).

What is served, and how: three repositories written by ``write_triton_repository`` (the uint8-nhwc
export as ``ssd300``, the fp32 export as ``ssd300_fp32``, the end2end export as ``ssd300_e2e``), merged
and copied **file by file** (empty folders dropped, as git and object stores do). The ensembles, the
Python-backend postprocess (model.py, spec.json, toolkit.json) and every config are served exactly as
generated, except one thing: this server build has no ONNX Runtime backend, so each network model
(``platform: "onnxruntime_onnx"``) is served with ``backend: "python"`` by
tests/helpers/triton/onnx_network_model.py, which runs the same ``model.onnx`` with ONNX Runtime inside the
server. The ONNX Runtime and TensorRT backends themselves are not exercised here.

One server serves every test of the module (it takes 10-20 s to start on a 2-core CPU), with header
forwarding on for every header (``--http-header-forward-pattern=.*``, gRPC too): every request carries
its headers as request parameters, as on a server so configured.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ssd_export.onnx.export import export_onnx
from ssd_export.triton.repository import write_triton_repository
from ssd_runtime.detector import Detector
from ssd_runtime.postprocess import postprocess
from ssd_runtime.spec import PostprocessSettings
from ssd_runtime.voc import read_split_ids
from tests.helpers.triton.server import ServerEnvironment, TritonServer, assert_padded_equal, find_server_environment

pytestmark = [pytest.mark.triton, pytest.mark.slow]

NETWORK_MODEL = Path(__file__).resolve().parents[1] / "helpers" / "triton" / "onnx_network_model.py"
DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"
#: Triton 24.10's server version, as its /v2 metadata reports it.
SERVER_VERSION = "2.51.0"


@pytest.fixture(scope="module")
def server_env() -> ServerEnvironment:
    found = find_server_environment()
    if isinstance(found, str):
        pytest.skip(found)
    return found


def serve_network_with_python(model_folder: Path) -> None:
    """The one change to a generated repository: an onnxruntime_onnx model is served by the Python backend.

    Same name, inputs, outputs, batching and instance group; ``backend: "python"`` replaces the platform and
    ``1/model.py`` (tests/helpers/triton/onnx_network_model.py) runs ``1/model.onnx`` with ONNX Runtime.
    """
    path = model_folder / "config.pbtxt"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    assert config.platform == "onnxruntime_onnx", config.platform
    config.platform, config.backend = "", "python"
    path.write_text(text_format.MessageToString(config))
    shutil.copyfile(NETWORK_MODEL, model_folder / "1" / "model.py")


def copy_files_only(source: Path, target: Path) -> None:
    """Copy every file of ``source`` into ``target``, creating only folders that hold files (as git does)."""
    for path in sorted(source.rglob("*")):
        if path.is_file():
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / path.relative_to(source))


@pytest.fixture(scope="module")
def exports(runtime_checkpoint: Path, runtime_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("triton_exports")
    made = {"ssd300_fp32": runtime_onnx}
    for name, variant in (("ssd300", "uint8-nhwc"), ("ssd300_e2e", "end2end")):
        export_onnx(runtime_checkpoint, folder / f"{name}.onnx", variant=variant, verify=False)
        made[name] = folder / f"{name}.onnx"
    return made


@pytest.fixture(scope="module")
def served(exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository the server loads: three generated repositories, merged and copied without empty folders."""
    work = tmp_path_factory.mktemp("triton_repository")
    root = work / "model_repository"
    for name, model in exports.items():
        # a queue delay long enough that concurrent requests meet in one batch
        write_triton_repository(model, work / "generated" / name, name=name, max_queue_delay_us=20000)
        copy_files_only(work / "generated" / name, root)
    for network in ("ssd300_network", "ssd300_fp32_network", "ssd300_e2e"):
        serve_network_with_python(root / network)
    return root


@pytest.fixture(scope="module")
def server(server_env: ServerEnvironment, served: Path, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest):
    failed_before = request.session.testsfailed
    triton = TritonServer(server_env, served, tmp_path_factory.mktemp("tritonserver"), extra_args=(
        "--http-header-forward-pattern=.*", "--grpc-header-forward-pattern=.*",
        "--model-control-mode=explicit", "--load-model=*",
    ))
    with triton:
        yield triton
    if request.session.testsfailed > failed_before:  # keep the log where the failure is reported
        sys.stderr.write(f"\n--- tritonserver log ({triton.log_path}) ---\n{triton.log_tail(200)}\n")


@pytest.fixture(scope="module")
def clients(server: TritonServer):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    http = httpclient.InferenceServerClient(server.http_url, concurrency=8)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    yield {"http": http, "grpc": grpc}
    http.close()
    grpc.close()


@pytest.fixture(scope="module")
def images(voc_root: Path) -> list[Path]:
    return [voc_root / "JPEGImages" / f"{i}.jpg" for i in read_split_ids(voc_root, "test")[:3]]


def infer(clients: dict, protocol: str, model: str, inputs: dict[str, np.ndarray], parameters: dict | None = None,
          headers: dict | None = None) -> dict[str, np.ndarray]:
    """One request over ``protocol``; its outputs by name."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    module = httpclient if protocol == "http" else grpcclient
    tensors = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = clients[protocol].infer(model, tensors, parameters=parameters, headers=headers)
    response = result.get_response()
    names = [o["name"] for o in response["outputs"]] if protocol == "http" else [o.name for o in response.outputs]
    return {name: result.as_numpy(name) for name in names}


def test_server_loads_the_repository_copied_without_empty_folders(server: TritonServer, clients: dict, served: Path):
    # what was served: no empty folder anywhere (the ensembles' version folders survive by their placeholder)
    assert not [p for p in served.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert clients["http"].get_server_metadata()["version"] == SERVER_VERSION
    for model in ("ssd300", "ssd300_network", "ssd300_postprocess", "ssd300_fp32", "ssd300_e2e"):
        assert clients["http"].is_model_ready(model), f"{model} not ready:\n{server.log_tail()}"
        assert clients["grpc"].is_model_ready(model)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize(("model", "layout"), [("ssd300", "uint8-nhwc"), ("ssd300_fp32", "float32-nchw")])
def test_ensemble_detections_equal_the_runtime(clients: dict, exports: dict, images: list[Path], model: str,
                                               layout: str, protocol: str):
    detector = Detector.load(exports[model])
    batch = detector.prepare(images)
    assert batch.pixels.dtype == (np.uint8 if layout == "uint8-nhwc" else np.float32)
    got = infer(clients, protocol, model, {"images": batch.pixels})
    # the network as the server ran it (ONNX Runtime inside the server's numpy<2 environment) ...
    raw = infer(clients, protocol, f"{model}_network", {"images": batch.pixels})
    locs, class_logits = detector.backend.infer(batch.pixels)
    np.testing.assert_allclose(raw["locs"], locs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(raw["class_logits"], class_logits, rtol=1e-4, atol=1e-5)
    # ... and the ensemble's detections == ssd_runtime's postprocess of those outputs, bit for bit
    spec = detector.spec
    expected = postprocess(raw["locs"], raw["class_logits"], spec.make_priors(), spec.detection, spec.variances)
    assert sum(len(d) for d in expected) > 0, "the model must detect something for this test to mean anything"
    assert_padded_equal(got, expected)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_end2end_model_equals_its_onnx_graph(clients: dict, exports: dict, images: list[Path], protocol: str):
    detector = Detector.load(exports["ssd300_fp32"])
    pixels = detector.prepare(images).pixels
    got = infer(clients, protocol, "ssd300_e2e", {"images": pixels})
    session = ort.InferenceSession(str(exports["ssd300_e2e"]), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": pixels})))
    assert got["num_detections"].shape == (len(images), 1)  # (N,) in the graph, dims [1] + reshape in the config
    np.testing.assert_array_equal(got["num_detections"][:, 0], expected["num_detections"])
    assert expected["num_detections"].sum() > 0
    np.testing.assert_array_equal(got["labels"], expected["labels"])
    np.testing.assert_allclose(got["boxes"], expected["boxes"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_request_parameters_change_the_result(clients: dict, exports: dict, images: list[Path], protocol: str):
    """Float parameters (Triton >= 24.02) reach the postprocess through the ensemble and act as the runtime's settings."""
    detector = Detector.load(exports["ssd300"])
    pixels = detector.prepare(images).pixels
    raw = infer(clients, protocol, "ssd300_network", {"images": pixels})
    spec, priors = detector.spec, detector.spec.make_priors()
    default = infer(clients, protocol, "ssd300", {"images": pixels})
    assert_padded_equal(default, postprocess(raw["locs"], raw["class_logits"], priors, spec.detection, spec.variances))
    # a min_score between the scores the default keeps, so it must keep fewer (the model is barely trained)
    threshold = float(np.median(default["scores"][0, : int(default["num_detections"][0, 0])]))
    counts = []
    for parameters, settings in [
        ({"min_score": threshold}, PostprocessSettings(threshold, spec.detection.max_overlap, spec.detection.top_k)),
        ({"min_score": 0.01, "max_overlap": 0.45}, PostprocessSettings(0.01, 0.45, spec.detection.top_k)),
        ({"min_score": 0.01, "top_k": 3}, PostprocessSettings(0.01, spec.detection.max_overlap, 3)),
        ({"min_score": "0.05", "top_k": "7"}, PostprocessSettings(0.05, spec.detection.max_overlap, 7)),
    ]:
        got = infer(clients, protocol, "ssd300", {"images": pixels}, parameters=parameters)
        assert_padded_equal(got, postprocess(raw["locs"], raw["class_logits"], priors, settings, spec.variances))
        counts.append(got["num_detections"][:, 0].tolist())
    assert counts[0][0] < default["num_detections"][0, 0], (counts, default["num_detections"])
    assert counts[2] == [3] * len(images) and max(counts[3]) <= 7, counts


def test_one_bad_request_fails_alone_in_its_batch(clients: dict, exports: dict, images: list[Path]):
    """Eight concurrent requests meet in the postprocess's batches; the one with top_k "inf" fails with 400, alone."""
    from tritonclient.utils import InferenceServerException

    detector = Detector.load(exports["ssd300"])
    pixels = detector.prepare(images[:1]).pixels
    before = _postprocess_stats(clients)
    bad_index = 3
    params = [{"top_k": "inf"} if i == bad_index else {"min_score": 0.01} for i in range(8)]

    import tritonclient.http as httpclient

    images_input = httpclient.InferInput("images", list(pixels.shape), "UINT8")
    images_input.set_data_from_numpy(pixels)
    # the HTTP client's own concurrency (8 connections; its gevent pool is not thread-safe)
    pending = [clients["http"].async_infer("ssd300", [images_input], parameters=p) for p in params]
    results = []
    for request in pending:
        try:
            result = request.get_result()
            results.append({n: result.as_numpy(n) for n in ("boxes", "scores", "labels", "num_detections")})
        except InferenceServerException as exc:
            results.append(exc)
    after = _postprocess_stats(clients)
    # they did share batches: fewer postprocess executions than requests
    assert after[1] - before[1] < after[0] - before[0] == 8, (before, after)
    bad = results[bad_index]
    assert isinstance(bad, InferenceServerException), bad
    assert bad.status() == "400" and "top_k must be a finite number" in bad.message(), (bad.status(), bad.message())
    good = [r for i, r in enumerate(results) if i != bad_index]
    assert all(isinstance(r, dict) for r in good), good
    assert all(np.array_equal(r["scores"], good[0]["scores"]) for r in good)


def _postprocess_stats(clients: dict) -> tuple[int, int]:
    """(inference_count, execution_count) of the postprocess model so far."""
    stats = clients["http"].get_inference_statistics("ssd300_postprocess")["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def test_bad_parameter_is_invalid_argument_over_grpc(clients: dict, exports: dict, images: list[Path]):
    from tritonclient.utils import InferenceServerException

    pixels = Detector.load(exports["ssd300"]).prepare(images[:1]).pixels
    with pytest.raises(InferenceServerException) as caught:
        infer(clients, "grpc", "ssd300", {"images": pixels}, parameters={"max_overlap": 0})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "max_overlap must be in (0, 1]" in caught.value.message()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_forwarded_headers_are_harmless(server: TritonServer, clients: dict, exports: dict, images: list[Path],
                                        protocol: str):
    pixels = Detector.load(exports["ssd300"]).prepare(images[:1]).pixels
    plain = infer(clients, protocol, "ssd300", {"images": pixels}, parameters={"top_k": 5})
    for _ in range(2):
        got = infer(clients, protocol, "ssd300", {"images": pixels}, parameters={"top_k": 5},
                    headers={"x-request-id": "abc-123", "x-tenant": "ssd"})
        for name in plain:
            np.testing.assert_array_equal(got[name], plain[name])
    # the headers reached the postprocess as parameters (so forwarding is on) and were logged once each
    warnings = re.findall(r"ignoring request parameter '([^']+)'", server.log())
    assert warnings.count("x-request-id") == 1 and warnings.count("x-tenant") == 1, warnings


def test_toolkit_version_mismatch_refuses_to_load(server: TritonServer, clients: dict, served: Path):
    """A repository written by another toolkit version fails to load on the real server, saying so."""
    from tritonclient.utils import InferenceServerException

    stale = served / "ssd300_stale_postprocess"
    shutil.copytree(served / "ssd300_postprocess", stale)
    config = stale / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "ssd300_postprocess"', 'name: "ssd300_stale_postprocess"'))
    (stale / "1/toolkit.json").write_text('{"ssd300_toolkit_version": "0.0.1"}\n')
    with pytest.raises(InferenceServerException, match=r"written by ssd300-toolkit 0\.0\.1"):
        clients["http"].load_model("ssd300_stale_postprocess")
    assert not clients["http"].is_model_ready("ssd300_stale_postprocess")


def test_docs_client_examples_run_as_written(server: TritonServer, served: Path, images: list[Path],
                                             monkeypatch: pytest.MonkeyPatch, capsys):
    """docs/serving.md's two client blocks, run against the server; only the ports are this server's."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 2
    monkeypatch.chdir(served.parent)  # the examples read model_repository/ssd300_postprocess/1/spec.json
    shutil.copyfile(images[0], served.parent / "street.jpg")
    http_block = blocks[0].replace("localhost:8000", server.http_url)
    grpc_block = blocks[1].replace("localhost:8001", server.grpc_url)
    assert http_block != blocks[0] and grpc_block != blocks[1]

    exec(compile(http_block, "docs/serving.md (HTTP client)", "exec"), {})  # noqa: S102 - our own docs
    lines = capsys.readouterr().out.splitlines()
    assert lines, "the example printed no detection: the model must detect something at min_score 0.3"
    assert all(float(line.split()[1]) > 0.3 for line in lines)
    exec(compile(grpc_block, "docs/serving.md (gRPC client)", "exec"), {})  # noqa: S102 - our own docs
    assert re.match(r"\[\d+\] \[", capsys.readouterr().out)
