"""The TensorRT backend's control flow on a CPU: the FAKE tensorrt (10.3 and 11.1, tests/helpers/fakes/tensorrt.py)
runs fake plans with ONNX Runtime on the host-memory STAND-IN for device memory
(tests/helpers/fakes/device_memory.py). Outputs are compared with OrtBackend on the same ONNX; the sidecar
checks, tensor discovery, buffers per batch size, contexts per thread, graphs and errors are checked
through what the backend asked the stand-in for."""
from __future__ import annotations

import hashlib
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest

from ssd_runtime import Detector
from ssd_runtime.backends.onnxruntime import OrtBackend
from ssd_runtime.backends.tensorrt import (
    EngineLoadError,
    EngineRunError,
    TensorRTBackend,
)
from ssd_runtime.compare import compare_detections
from ssd_runtime.cuda_device import CudaUnavailableError
from ssd_runtime.engine_sidecar import EngineMismatchError, EngineSidecarError
from ssd_runtime.preprocess import InputError
from tests.helpers.fakes.device_memory import HostMemory
from tests.helpers.tensorrt_engines import fake_plan, write_engine

MAJOR = {"10.3.0": "10.3", "11.1.0": "11.1"}


def _major(trt) -> str:
    return MAJOR[trt.__version__]


@pytest.fixture(scope="module")
def batch(voc_root, runtime_onnx):
    images = sorted((voc_root / "JPEGImages").glob("*.jpg"))[:4]
    return Detector.load(runtime_onnx).prepare(images).pixels  # float32 (4, 3, 300, 300)


@pytest.fixture
def engine(fake_trt, runtime_onnx, tmp_path):
    return write_engine(runtime_onnx, tmp_path / "small.engine", _major(fake_trt))


def _load(path, memory=None, **options) -> TensorRTBackend:
    return TensorRTBackend.load(path, memory=memory or HostMemory(), **options)


def test_raw_engine_outputs_equal_onnx_runtime(engine, runtime_onnx, batch):
    backend = _load(engine)
    assert (backend.output_kind, backend.input_kind, backend.batch_range) == ("raw", "float32-nchw", (1, 4))
    assert backend.spec == OrtBackend(runtime_onnx).spec
    reference = OrtBackend(runtime_onnx)
    for n in (1, 3, 4):
        ours, theirs = backend.infer(batch[:n]), reference.infer(batch[:n])
        assert len(ours) == 2
        for a, b in zip(ours, theirs):
            assert a.dtype == np.float32 and a.shape == b.shape
            np.testing.assert_array_equal(a, b)


def test_buffers_are_allocated_once_per_batch_size_and_reused(engine, batch):
    memory = HostMemory()
    backend = _load(engine, memory)
    for n in (2, 2, 3, 2, 3):
        backend.infer(batch[:n])
    assert memory.counts["alloc"] == 2 * 3  # batch sizes 2 and 3 x (input, locs, class_logits)
    assert memory.counts["stream"] == 1 and memory.counts["capture"] == 0
    assert memory.counts["to_device"] == 5 and memory.counts["to_host"] == 10 and memory.counts["synchronize"] == 5
    backend.close()
    assert memory.live == 0 and memory.counts["destroy_stream"] == 1
    with pytest.raises(EngineRunError, match="closed"):
        backend.infer(batch[:1])


def test_one_context_and_stream_per_thread(engine, runtime_onnx, batch):
    memory = HostMemory()
    backend = _load(engine, memory)
    expected = {n: OrtBackend(runtime_onnx).infer(batch[:n]) for n in (1, 2, 3, 4)}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(offset: int) -> None:
        try:
            start.wait()
            for i in range(6):  # every thread changes batch size, so contexts would clash if shared
                n = (offset + i) % 4 + 1
                for a, b in zip(backend.infer(batch[:n]), expected[n]):
                    np.testing.assert_array_equal(a, b)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert memory.counts["stream"] == 4 and len(backend._states) == 4
    assert memory.counts["alloc"] == 4 * 4 * 3  # per thread: 4 batch sizes x 3 tensors
    backend.infer(batch[:1])  # a new thread state for the main thread frees those of the ended threads
    assert memory.counts["destroy_stream"] == 4 and memory.live == 3


def test_cuda_graph_is_captured_once_per_batch_size_and_replayed(engine, runtime_onnx, batch):
    memory = HostMemory()
    backend = _load(engine, memory, cuda_graph=True)
    reference = OrtBackend(runtime_onnx)
    for n in (2, 2, 1, 2):
        for a, b in zip(backend.infer(batch[:n]), reference.infer(batch[:n])):
            np.testing.assert_array_equal(a, b)
    shifted = batch[1:3].copy()  # new data through the same captured graph
    np.testing.assert_array_equal(backend.infer(shifted)[1], reference.infer(shifted)[1])
    assert memory.counts["capture"] == 2 and memory.counts["launch"] == 5
    backend.close()
    assert memory.counts["free_graph"] == 2 and memory.live == 0


def test_torch_tensors_in_give_torch_tensors_out(engine, runtime_onnx, batch):
    import torch

    memory = HostMemory()
    backend = _load(engine, memory)
    locs, logits = backend.infer(torch.from_numpy(batch[:2]))
    assert isinstance(locs, torch.Tensor) and locs.dtype == torch.float32
    np.testing.assert_array_equal(logits.numpy(), OrtBackend(runtime_onnx).infer(batch[:2])[1])
    assert memory.counts["to_host"] == 0 and memory.counts["device_to_device"] == 3  # no host copy
    assert memory.counts["wait_for_torch"] == 1


def test_detector_runs_engines_like_onnx_models(engine, runtime_onnx, batch):
    ours = Detector.load(engine, device="cuda", memory=HostMemory())
    theirs = Detector.load(runtime_onnx)
    settings = theirs.spec.evaluation
    a, b = theirs.fractional_detections(batch, settings), ours.fractional_detections(batch, settings)
    assert sum(len(d) for d in a) > 0
    assert compare_detections(a, b, settings).identical


def test_end2end_engine_gives_detections(fake_trt, end2end_onnx, batch, tmp_path):
    engine = write_engine(end2end_onnx, tmp_path / "e2e.engine", _major(fake_trt))
    detector = Detector.load(engine, device="cuda", memory=HostMemory())
    assert detector.output_kind == "detections" and detector.backend.end2end.settings.max_overlap == 0.45
    boxes, _, labels, num = detector.backend.infer(batch[:2])
    assert boxes.shape == (2, 200, 4) and labels.dtype == np.int64 and num.dtype == np.int64
    reference = Detector.load(end2end_onnx)
    settings = reference.settings
    assert compare_detections(reference.fractional_detections(batch, settings), detector.fractional_detections(batch, settings),
                              settings).identical


@pytest.fixture(scope="module")
def end2end_onnx(runtime_checkpoint, tmp_path_factory):
    from ssd_export.onnx.export import export_onnx
    from ssd_runtime.spec import EVALUATION_SETTINGS

    out = tmp_path_factory.mktemp("trt_e2e") / "e2e.onnx"
    export_onnx(runtime_checkpoint, out, variant="end2end", end2end_settings=EVALUATION_SETTINGS, verify=False)
    return out


# ---- sidecar ---------------------------------------------------------------------------------------


def test_plan_without_sidecar_is_refused_unless_trusted_with_a_spec(fake_trt, runtime_onnx, batch, tmp_path):
    engine = write_engine(runtime_onnx, tmp_path / "bare.plan", _major(fake_trt), sidecar=False)
    with pytest.raises(EngineSidecarError, match=r"bare\.plan\.json.*ssd-export engine.*trust_plan=True"):
        _load(engine)
    with pytest.raises(EngineSidecarError, match="needs spec="):
        _load(engine, trust_plan=True)
    spec = OrtBackend(runtime_onnx).spec
    backend = _load(engine, trust_plan=True, spec=spec)
    assert backend.sidecar is None and backend.spec == spec
    np.testing.assert_array_equal(backend.infer(batch[:1])[0], OrtBackend(runtime_onnx).infer(batch[:1])[0])


def test_end2end_plan_without_sidecar_is_refused(fake_trt, end2end_onnx, runtime_onnx, tmp_path):
    engine = write_engine(end2end_onnx, tmp_path / "e2e.plan", _major(fake_trt), sidecar=False)
    with pytest.raises(EngineLoadError, match="baked postprocess settings are unknown"):
        _load(engine, trust_plan=True, spec=OrtBackend(runtime_onnx).spec)


def test_changed_plan_is_refused_before_deserializing(fake_trt, engine, monkeypatch):
    calls = []
    monkeypatch.setattr(fake_trt, "Runtime", lambda logger: calls.append(logger))
    engine.write_bytes(engine.read_bytes() + b"tampered")
    with pytest.raises(EngineMismatchError, match=r"sha256.*rebuild it on this machine with: ssd-export engine"):
        _load(engine)
    assert not calls


def test_other_tensorrt_version_is_refused(fake_trt, runtime_onnx, tmp_path):
    engine = write_engine(runtime_onnx, tmp_path / "old.engine", _major(fake_trt),
                          plan=fake_plan(runtime_onnx, _major(fake_trt), tensorrt_version="10.0.1"))
    with pytest.raises(EngineMismatchError, match=f"built with TensorRT 10.0.1.*running TensorRT {fake_trt.__version__}"):
        _load(engine)


def test_version_compatible_plan_loads_with_host_code_allowed(fake_trt, runtime_onnx, batch, tmp_path):
    plan = fake_plan(runtime_onnx, _major(fake_trt), tensorrt_version="10.0.1", flags=("VERSION_COMPATIBLE",))
    engine = write_engine(runtime_onnx, tmp_path / "vc.engine", _major(fake_trt), plan=plan)
    # the fake refuses a plan of another version unless engine_host_code_allowed was set
    assert _load(engine).infer(batch[:1])[0].shape == (1, 8732, 4)


def test_other_gpu_is_refused_unless_hardware_compatible(fake_trt, runtime_onnx, engine, batch, tmp_path):
    with pytest.raises(EngineMismatchError, match=r"compute capability 8\.7.*running on compute capability 9\.0"):
        _load(engine, HostMemory(compute_capability="9.0"))
    portable = write_engine(runtime_onnx, tmp_path / "ampere_plus.engine", _major(fake_trt),
                            hardware_compatibility="ampere_plus")
    assert _load(portable, HostMemory(compute_capability="9.0")).infer(batch[:1])[1].shape[0] == 1
    with pytest.raises(EngineMismatchError, match="ampere_plus"):
        _load(portable, HostMemory(compute_capability="7.5"))


def test_spec_argument_must_match_the_sidecar(engine):
    spec = _load(engine).spec
    assert _load(engine, spec=spec).spec == spec
    changed = replace(spec, class_names=(*spec.class_names[:-1], "other"))
    with pytest.raises(EngineSidecarError, match="spec= differs"):
        _load(engine, spec=changed)


# ---- errors ----------------------------------------------------------------------------------------


def test_batches_are_checked(engine, batch):
    backend = _load(engine)
    with pytest.raises(InputError, match=r"batches of 1 to 4.*received 5"):
        backend.infer(np.concatenate([batch, batch[:1]]))
    with pytest.raises(InputError, match="expects float32"):
        backend.infer(batch[:1].astype(np.float64))
    with pytest.raises(InputError, match="expects float32"):
        backend.infer(np.zeros((1, 300, 300, 3), np.uint8))


def test_not_an_ssd_engine_is_refused(fake_trt, runtime_onnx, tmp_path):
    plan = fake_plan(runtime_onnx, _major(fake_trt), rename_outputs={"locs": "boxes_raw"})
    engine = write_engine(runtime_onnx, tmp_path / "other.engine", _major(fake_trt), plan=plan)
    with pytest.raises(EngineLoadError, match=r"not an SSD300 engine.*boxes_raw"):
        _load(engine)


def test_unreadable_plan_names_the_rebuild_command(fake_trt, runtime_onnx, tmp_path):
    junk = b"not a plan"
    engine = write_engine(runtime_onnx, tmp_path / "junk.engine", _major(fake_trt),
                          plan_sha256=hashlib.sha256(junk).hexdigest())
    engine.write_bytes(junk)  # a sidecar that vouches for bytes TensorRT cannot read
    with pytest.raises(EngineLoadError, match=r"could not deserialize.*rebuild it with: ssd-export engine"):
        _load(engine)


def test_failed_execution_is_an_error(fake_trt, engine, batch, monkeypatch):
    monkeypatch.setattr(fake_trt.IExecutionContext, "execute_async_v3", lambda self, stream: False)
    with pytest.raises(EngineRunError, match="execute_async_v3 failed"):
        _load(engine).infer(batch[:1])


def test_cpu_device_is_refused(engine):
    with pytest.raises(ValueError, match="run on a CUDA GPU.*--device cuda"):
        _load(engine, device="cpu")


def test_no_tensorrt_says_what_to_install(engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineLoadError, match=r"needs TensorRT.*ssd300-toolkit\[tensorrt-cu13\].*tensorrt-cu12.*JetPack"):
        _load(engine)


def test_no_gpu_is_the_real_cuda_error_here(engine):
    from tests.helpers.cuda_status import cuda_status

    if cuda_status() is None:
        pytest.skip("this machine has a CUDA GPU, or no cuda-bindings")
    with pytest.raises(CudaUnavailableError, match=cuda_status()):
        TensorRTBackend.load(engine)  # the real CudaMemory


NO_TORCH = """
import sys
from tests.helpers.fakes.tensorrt import fake_tensorrt
sys.modules["tensorrt"] = fake_tensorrt("10.3")
import numpy as np
from ssd_runtime import Detector
from tests.helpers.fakes.device_memory import HostMemory
detector = Detector.load(sys.argv[1], device="cuda", memory=HostMemory())
detector.detect(np.zeros((60, 80, 3), np.uint8))
print(sorted(m for m in ("torch", "ssd_train", "ssd_export") if m in sys.modules))
"""


def test_numpy_path_runs_without_torch(runtime_onnx, tmp_path):
    # what a Jetson without torch runs: engine + NumPy postprocess, torch never imported
    import subprocess
    from pathlib import Path

    engine = write_engine(runtime_onnx, tmp_path / "small.engine", "10.3")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(engine)], capture_output=True, text=True, check=True,
                         cwd=root)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_precision_for_the_eval_target_comes_from_the_sidecar(fake_trt, runtime_onnx, tmp_path):
    from ssd_runtime.evaluate import precision_of

    # an fp32 ONNX built with TensorRT 10's FP16 flag: the source variant is fp32, the engine computes in fp16
    engine = write_engine(runtime_onnx, tmp_path / "fp16.engine", _major(fake_trt), precision="fp16", fp16_flag=True)
    assert precision_of(Detector.load(engine, device="cuda", memory=HostMemory())) == "fp16"


def test_engine_backend_provides_the_protocol(fake_trt, engine, runtime_onnx, tmp_path):
    from ssd_runtime.backends import PROTOCOL_MEMBERS, Backend
    from ssd_runtime.evaluate import precision_of

    backend = _load(engine, cuda_graph=True)
    assert isinstance(backend, Backend) and [m for m in PROTOCOL_MEMBERS if not hasattr(backend, m)] == []
    assert (backend.path, backend.variant, backend.precision, backend.output_kind) == (engine, "fp32", "fp32", "raw")
    assert backend.end2end is None
    assert backend.options == {"variant": "fp32", "cuda_graph": True}  # what bench reported before the protocol
    # a trusted plan without its sidecar declares neither; the evaluation reports it as fp32, as before
    bare = write_engine(runtime_onnx, tmp_path / "bare.plan", _major(fake_trt), sidecar=False)
    trusted = Detector.load(bare, device="cuda", memory=HostMemory(), trust_plan=True, spec=backend.spec)
    assert (trusted.backend.variant, trusted.backend.precision, precision_of(trusted)) == (None, None, "fp32")
    backend.close()
    with pytest.raises(EngineRunError, match="was closed"):
        backend.infer(np.zeros((1, 3, 300, 300), np.float32))


def test_graph_capture_follows_trtexecs_sequence(engine, batch, monkeypatch):
    """sampleInference.cpp (release/10.3, createEnqueueFunction): enqueue once, synchronize, then capture."""
    memory = HostMemory()
    events: list[str] = []
    for name in ("synchronize", "capture", "launch"):
        original = getattr(memory, name)
        monkeypatch.setattr(memory, name, lambda *a, _n=name, _f=original: (events.append(_n), _f(*a))[1])
    handle = memory.stream_handle
    monkeypatch.setattr(memory, "stream_handle", lambda s: (events.append("enqueue"), handle(s))[1])
    _load(engine, memory, cuda_graph=True).infer(batch[:2])
    assert events[:4] == ["enqueue", "synchronize", "capture", "launch"]


def test_failed_graph_capture_falls_back_once_per_batch_size(engine, runtime_onnx, batch):
    import warnings

    from ssd_runtime.backends.tensorrt import CudaGraphFallbackWarning

    memory = HostMemory()
    backend = _load(engine, memory, cuda_graph=True)
    reference = OrtBackend(runtime_onnx)
    memory.fail_captures = 1
    with pytest.warns(CudaGraphFallbackWarning, match=r"batch size 2 failed \(.*cudaErrorStreamCaptureInvalidated.*"
                      r"runs without CUDA graphs"):
        outputs = backend.infer(batch[:2])
    for a, b in zip(outputs, reference.infer(batch[:2])):
        np.testing.assert_array_equal(a, b)  # the warm-up enqueue's outputs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # remembered: no second warning, no second try
        for a, b in zip(backend.infer(batch[1:3]), reference.infer(batch[1:3])):
            np.testing.assert_array_equal(a, b)
        backend.infer(batch[:1])  # another batch size is still captured
    assert memory.counts["capture"] == 2 and memory.counts["capture_failed"] == 1
    assert memory.counts["launch"] == 1 and list(backend.graph_failures) == [2]
    assert memory.live_graphs == 1
    backend.close()
    assert memory.live_graphs == 0 and memory.live == 0


def test_uint8_nhwc_engine_takes_uint8_images(fake_trt, runtime_checkpoint, voc_root, tmp_path):
    from ssd_export.onnx.export import export_onnx

    onnx_path = tmp_path / "u8.onnx"
    export_onnx(runtime_checkpoint, onnx_path, variant="uint8-nhwc", verify=False)
    backend = _load(write_engine(onnx_path, tmp_path / "u8.engine", _major(fake_trt)))
    assert backend.input_kind == "uint8-nhwc"
    reference = Detector.load(onnx_path)
    pixels = reference.prepare(sorted((voc_root / "JPEGImages").glob("*.jpg"))[:2]).pixels  # uint8 (2, 300, 300, 3)
    for a, b in zip(backend.infer(pixels), reference.backend.infer(pixels)):
        np.testing.assert_array_equal(a, b)


def test_static_batch_engine_takes_only_its_batch(fake_trt, runtime_onnx, batch, tmp_path):
    import onnx

    model = onnx.load(str(runtime_onnx))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 2  # the static-batch export's shapes
    static = tmp_path / "static.onnx"
    onnx.save(model, str(static))
    backend = _load(write_engine(static, tmp_path / "static.engine", _major(fake_trt)))
    assert backend.batch_range == (2, 2)
    np.testing.assert_array_equal(backend.infer(batch[:2])[1], OrtBackend(runtime_onnx).infer(batch[:2])[1])
    with pytest.raises(InputError, match="batches of exactly 2 images"):
        backend.infer(batch[:1])
