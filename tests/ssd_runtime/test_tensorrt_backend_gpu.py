"""The TensorRT backend on real TensorRT and a real GPU (marked tensorrt; run by scripts/gpu_check.sh
wherever TensorRT is installed): engines built by ``ssd_export.tensorrt.engine.build_engine`` from the session's
small model, run through real cuda-python device memory, compared with ONNX Runtime on the CPU."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from ssd_runtime import Detector
from ssd_runtime.backends.onnxruntime import OrtBackend
from ssd_runtime.backends.tensorrt import TensorRTBackend
from ssd_runtime.compare import compare_detections
from ssd_runtime.cuda_device import device_info
from ssd_runtime.spec import EVALUATION_SETTINGS

pytestmark = pytest.mark.tensorrt

# FP32 TensorRT kernels vs ONNX Runtime's CPU kernels: not bit-identical (different convolution
# algorithms, TF32 off by default in TensorRT 10+); the toolkit's FP32 parity tolerance covers it
ATOL = 1e-3


@pytest.fixture(scope="module")
def engines(runtime_onnx, runtime_checkpoint, tmp_path_factory):
    from ssd_export.tensorrt.engine import build_engine
    from ssd_export.onnx.export import export_onnx

    folder = tmp_path_factory.mktemp("trt")
    e2e_onnx = folder / "e2e.onnx"
    export_onnx(runtime_checkpoint, e2e_onnx, variant="end2end", end2end_settings=EVALUATION_SETTINGS, verify=False)
    raw = build_engine(runtime_onnx, folder / "raw.engine", batch=(1, 2, 4), parity=False).engine_path
    e2e = build_engine(e2e_onnx, folder / "e2e.engine", batch=(1, 2, 4), parity=False).engine_path
    return {"raw": raw, "e2e": e2e, "e2e_onnx": e2e_onnx}


@pytest.fixture(scope="module")
def batch(voc_root, runtime_onnx):
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:4]
    return Detector.load(runtime_onnx).prepare(images).pixels


def test_sidecar_matches_this_gpu_and_outputs_match_onnx_runtime(engines, runtime_onnx, batch):
    backend = TensorRTBackend.load(engines["raw"])
    assert backend.sidecar.compute_capability == device_info(0).compute_capability
    assert backend.batch_range == (1, 4) and backend.output_kind == "raw"
    reference = OrtBackend(runtime_onnx)
    for n in (1, 3, 4):
        for ours, theirs in zip(backend.infer(batch[:n]), reference.infer(batch[:n])):
            assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
            np.testing.assert_allclose(ours, theirs, atol=ATOL)
    backend.close()


def test_cuda_graph_replays_equal_plain_execution(engines, batch):
    plain = TensorRTBackend.load(engines["raw"])
    graph = TensorRTBackend.load(engines["raw"], cuda_graph=True)
    for n in (2, 2, 1, 2):
        for a, b in zip(plain.infer(batch[:n]), graph.infer(batch[:n])):
            np.testing.assert_array_equal(a, b)


def test_torch_device_tensors_stay_on_the_device(engines, batch):
    import torch

    backend = TensorRTBackend.load(engines["raw"])
    locs, logits = backend.infer(torch.from_numpy(batch[:2]).to("cuda:0"))
    assert locs.is_cuda and logits.is_cuda and logits.dtype == torch.float32
    np.testing.assert_allclose(logits.cpu().numpy(), backend.infer(batch[:2])[1], atol=1e-6)


def test_threads_each_get_a_context(engines, batch):
    backend = TensorRTBackend.load(engines["raw"])
    expected = {n: backend.infer(batch[:n]) for n in (1, 2, 3, 4)}
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(8):
                n = (offset + i) % 4 + 1
                for a, b in zip(backend.infer(batch[:n]), expected[n]):
                    np.testing.assert_allclose(a, b, atol=1e-6)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(backend._states) == 5  # the main thread and four workers


@pytest.mark.parametrize("postprocess", ["numpy", "torch"])
def test_detector_on_engines_equals_onnx_runtime(engines, runtime_onnx, batch, postprocess):
    settings = EVALUATION_SETTINGS
    reference = Detector.load(runtime_onnx).fractional_detections(batch, settings)
    for name in ("raw", "e2e"):
        detector = Detector.load(engines[name], device="cuda", postprocess=postprocess)
        comparison = compare_detections(reference, detector.fractional_detections(batch, settings), settings, atol=ATOL)
        assert comparison.identical, (name, comparison.mismatches[:5])


def test_end2end_engine_outputs(engines, batch):
    backend = TensorRTBackend.load(engines["e2e"])
    boxes, scores, labels, num = backend.infer(batch[:2])
    assert backend.output_kind == "detections" and backend.end2end.settings == EVALUATION_SETTINGS
    assert boxes.shape == (2, 200, 4) and labels.dtype == np.int64 and num.dtype == np.int64
    for n in range(2):
        assert (labels[n, num[n]:] == -1).all() and (np.diff(scores[n, : num[n]]) <= 0).all()
