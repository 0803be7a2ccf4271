"""The Triton Python-backend postprocess, run outside the server through a stand-in for
``triton_python_backend_utils``: the generated ``model.py`` on a real ONNX model's outputs gives
exactly ``ssd_runtime``'s detections, and request parameters act as the runtime's settings do.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssd_export.triton.repository import write_triton_repository
from ssd_runtime.detector import Detector
from ssd_runtime.postprocess import postprocess
from ssd_runtime.spec import ModelSpec, PostprocessSettings
from ssd_runtime.voc import read_split_ids
from tests.helpers.triton import pb_utils_standin as pb
from tests.helpers.triton.server import assert_padded_equal

NUMPY_OF = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64}


@pytest.fixture(scope="module")
def repository(runtime_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton") / "model_repository"
    write_triton_repository(runtime_onnx, root)  # K: the spec's detection top_k, 200
    return root


@pytest.fixture(scope="module")
def raw_outputs(runtime_onnx: Path, voc_root: Path) -> tuple[Detector, list[Path], np.ndarray, np.ndarray]:
    """The real ONNX model's raw outputs on 4 test images of the session's dataset."""
    detector = Detector.load(runtime_onnx)
    paths = [voc_root / "JPEGImages" / f"{image_id}.jpg" for image_id in read_split_ids(voc_root, "test")[:4]]
    locs, class_logits = detector.backend.infer(detector.prepare(paths).pixels)
    return detector, paths, locs, class_logits


def request(locs: np.ndarray, class_logits: np.ndarray, parameters: dict | None = None) -> pb.InferenceRequest:
    return pb.InferenceRequest([pb.Tensor("locs", locs), pb.Tensor("class_logits", class_logits)], parameters)


def outputs(response: pb.InferenceResponse, config: dict, batch: int) -> dict[str, np.ndarray]:
    """The response's tensors, checked against the config as Triton checks them: names, types, batch + dims."""
    assert not response.has_error(), response.error().message()
    tensors = {t.name(): t.as_numpy() for t in response.output_tensors()}
    assert list(tensors) == [o["name"] for o in config["output"]]
    for declared in config["output"]:
        array = tensors[declared["name"]]
        assert array.dtype == NUMPY_OF[declared["data_type"]], declared["name"]
        assert array.shape == (batch, *(int(d) for d in declared["dims"])), declared["name"]
    return tensors


def test_detections_equal_the_runtime(repository: Path, raw_outputs):
    folder = repository / "ssd300_postprocess"
    model = pb.load_model(folder)
    config = pb.model_config(folder)
    detector, paths, locs, class_logits = raw_outputs
    spec = detector.spec
    # two requests in one execute call, as the dynamic batcher hands them: 3 images and 1 image
    responses = model.execute([request(locs[:3], class_logits[:3]), request(locs[3:], class_logits[3:])])
    assert len(responses) == 2
    got = [outputs(responses[0], config, 3), outputs(responses[1], config, 1)]
    expected = postprocess(locs, class_logits, spec.make_priors(), spec.detection, spec.variances)
    assert sum(len(d) for d in expected) > 0, "the trained model must detect something for this test to mean anything"
    assert_padded_equal(got[0], expected[:3], 200)
    assert_padded_equal(got[1], expected[3:], 200)
    # pixels as a client computes them (docs/serving.md) == the Detector's on the same raw outputs
    sizes = detector.prepare(paths).sizes
    for j, (tensors, i) in enumerate([(got[0], 0), (got[0], 1), (got[0], 2), (got[1], 0)]):
        result = detector.to_image_detections(expected[j], *sizes[j])
        m = int(tensors["num_detections"][i, 0])
        np.testing.assert_array_equal(tensors["boxes"][i, :m] * np.float32([*sizes[j], *sizes[j]]), result.boxes)


def test_request_parameters_act_as_runtime_settings(repository: Path, raw_outputs):
    folder = repository / "ssd300_postprocess"
    model = pb.load_model(folder)
    config = pb.model_config(folder)
    detector, _, locs, class_logits = raw_outputs
    spec, priors = detector.spec, detector.spec.make_priors()
    cases = [
        ({"min_score": 0.01, "max_overlap": 0.45, "top_k": 200}, PostprocessSettings(0.01, 0.45, 200)),
        ({"min_score": "0.05", "top_k": "7"}, PostprocessSettings(0.05, spec.detection.max_overlap, 7)),
        ({"max_overlap": 0.3, "priority": 1}, PostprocessSettings(spec.detection.min_score, 0.3, spec.detection.top_k)),
        ({"top_k": 0}, PostprocessSettings(spec.detection.min_score, spec.detection.max_overlap, 0)),
    ]
    responses = model.execute([request(locs, class_logits, params) for params, _ in cases])
    counts = []
    for response, (_, settings) in zip(responses, cases):
        tensors = outputs(response, config, locs.shape[0])
        assert_padded_equal(tensors, postprocess(locs, class_logits, priors, settings, spec.variances), 200)
        counts.append(int(tensors["num_detections"].sum()))
    default = outputs(model.execute([request(locs, class_logits)])[0], config, locs.shape[0])
    # a higher min_score keeps fewer, top_k 7 caps, top_k 0 keeps nothing
    assert counts[1] < int(default["num_detections"].sum()) and counts[3] == 0
    assert (outputs(responses[1], config, locs.shape[0])["num_detections"] <= 7).all()


@pytest.mark.parametrize(("parameters", "message"), [
    ({"top_k": "inf"}, "top_k must be a finite number"),  # was an OverflowError in int() that failed the batch
    ({"top_k": float("nan")}, "top_k must be a finite number"),
    ({"min_score": "nan"}, "min_score must be a finite number"),
    ({"max_overlap": "-inf"}, "max_overlap must be a finite number"),
    ({"top_k": 201}, r"top_k must be an integer in \[0, 200\]"),
    ({"top_k": 2.5}, "top_k must be an integer"),
    ({"min_score": 1.5}, r"min_score must be in \[0, 1\)"),
    ({"max_overlap": 0}, r"max_overlap must be in \(0, 1\]"),
    ({"min_score": "high"}, "min_score must be a number"),
    ({"min_score": True}, "min_score must be a number"),
])
def test_a_bad_parameter_fails_its_request_alone(repository: Path, raw_outputs, parameters, message):
    folder = repository / "ssd300_postprocess"
    model = pb.load_model(folder)
    _, _, locs, class_logits = raw_outputs
    good_before, bad, good = model.execute([request(locs[:1], class_logits[:1]),
                                            request(locs[:1], class_logits[:1], parameters),
                                            request(locs[:1], class_logits[:1])])
    assert bad.has_error() and bad.output_tensors() == []
    assert re.search(message, bad.error().message())
    # INVALID_ARG: clients see HTTP 400 / gRPC INVALID_ARGUMENT, not the default INTERNAL (500)
    assert bad.error().code() == pb.TritonError.INVALID_ARG
    for response in (good_before, good):
        assert not response.has_error()
        outputs(response, pb.model_config(folder), 1)


def test_any_error_in_one_request_fails_that_request_alone(repository: Path, raw_outputs):
    """Not only bad parameters: a request whose inputs break the postprocess fails alone, as INTERNAL."""
    folder = repository / "ssd300_postprocess"
    model = pb.load_model(folder)
    _, _, locs, class_logits = raw_outputs
    broken = pb.InferenceRequest([pb.Tensor("locs", locs[:1])])  # no class_logits: an AttributeError inside
    good, bad = model.execute([request(locs[:1], class_logits[:1]), broken])
    assert bad.has_error() and bad.error().code() == pb.TritonError.INTERNAL and bad.error().message()
    outputs(good, pb.model_config(folder), 1)


def test_other_parameters_are_ignored_and_logged_once(repository: Path, raw_outputs):
    """Forwarded headers arrive as request parameters (--http-header-forward-pattern): they must not fail requests."""
    folder = repository / "ssd300_postprocess"
    model = pb.load_model(folder)
    detector, _, locs, class_logits = raw_outputs
    spec = detector.spec
    pb.LOGGED.clear()
    headers = {"x-request-id": "42", "user-agent": "curl/8", "min_scor": 0.5, "top_k": 5}
    responses = model.execute([request(locs[:1], class_logits[:1], headers) for _ in range(3)])
    settings = PostprocessSettings(spec.detection.min_score, spec.detection.max_overlap, 5)
    expected = postprocess(locs[:1], class_logits[:1], spec.make_priors(), settings, spec.variances)
    for response in responses:
        assert_padded_equal(outputs(response, pb.model_config(folder), 1), expected, 200)
    warned = [message for level, message in pb.LOGGED if level == "warn"]
    assert len(warned) == 3 and all("ignoring request parameter" in m for m in warned)
    assert sorted(m.split("'")[1] for m in warned) == ["min_scor", "user-agent", "x-request-id"]


def test_initialize_refuses_another_toolkit_version(repository: Path, tmp_path: Path):
    folder = tmp_path / "ssd300_postprocess"
    shutil.copytree(repository / "ssd300_postprocess", folder)
    (folder / "1/toolkit.json").write_text(json.dumps({"ssd300_toolkit_version": "0.0.1"}))
    with pytest.raises(ValueError, match=r"written by ssd300-toolkit 0\.0\.1, but the server's Python has "
                                         r"ssd300-toolkit \S+ .*pip install ssd300-toolkit==0\.0\.1"):
        pb.load_model(folder)
    (folder / "1/toolkit.json").unlink()
    with pytest.raises(ValueError, match=r"toolkit\.json is missing.*regenerate it with `ssd-export triton`"):
        pb.load_model(folder)


def test_max_detections_caps_the_default_top_k(runtime_onnx: Path, raw_outputs, tmp_path: Path):
    write_triton_repository(runtime_onnx, tmp_path / "r", max_detections=50)
    folder = tmp_path / "r/ssd300_postprocess"
    model = pb.load_model(folder)
    detector, _, locs, class_logits = raw_outputs
    spec = detector.spec
    tensors = outputs(model.execute([request(locs, class_logits)])[0], pb.model_config(folder), locs.shape[0])
    capped = PostprocessSettings(spec.detection.min_score, spec.detection.max_overlap, 50)
    assert_padded_equal(tensors, postprocess(locs, class_logits, spec.make_priors(), capped, spec.variances), 50)
    assert model.execute([request(locs, class_logits, {"top_k": 51})])[0].has_error()


def test_initialize_refuses_a_spec_that_does_not_match_the_config(repository: Path, tmp_path: Path):
    folder = tmp_path / "ssd300_postprocess"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text((repository / "ssd300_postprocess/config.pbtxt").read_text())
    (folder / "1/model.py").write_text((repository / "ssd300_postprocess/1/model.py").read_text())
    (folder / "1/spec.json").write_text(ModelSpec.create(("background", "cat")).to_json())  # 2 classes, not 8
    (folder / "1/toolkit.json").write_text((repository / "ssd300_postprocess/1/toolkit.json").read_text())
    with pytest.raises(ValueError, match=r"class_logits is declared \[8732, 8\].*says \[8732, 2\]"):
        pb.load_model(folder)


def test_fp16_network_outputs_are_postprocessed_in_float32(repository: Path, raw_outputs):
    """An engine may hand FP16 locs/logits (the config then declares TYPE_FP16): the runtime's float32 math on them."""
    folder = repository / "ssd300_postprocess"
    model = pb.load_model(folder)
    detector, _, locs, class_logits = raw_outputs
    spec = detector.spec
    half_locs, half_logits = locs.astype(np.float16), class_logits.astype(np.float16)
    tensors = outputs(model.execute([request(half_locs, half_logits)])[0], pb.model_config(folder), locs.shape[0])
    assert_padded_equal(tensors, postprocess(half_locs, half_logits, spec.make_priors(), spec.detection, spec.variances), 200)
