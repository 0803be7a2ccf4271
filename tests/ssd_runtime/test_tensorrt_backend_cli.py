"""``ssd-runtime eval``, ``bench`` and ``detect`` on engines exactly as on ONNX models: the FAKE tensorrt
(tests/helpers/fakes/tensorrt.py) and the host-memory STAND-IN (tests/helpers/fakes/device_memory.py) in place of
``CudaMemory``; the numbers must equal those of the ONNX model the fake plan runs."""
from __future__ import annotations

import json

import pytest

from ssd_runtime.cli import main as runtime_main
from tests.helpers.fakes.device_memory import HostMemory
from tests.helpers.tensorrt_engines import write_engine


@pytest.fixture
def engine(fake_trt, runtime_onnx, tmp_path, monkeypatch):
    import ssd_runtime.cuda_device

    monkeypatch.setattr(ssd_runtime.cuda_device, "CudaMemory", lambda index: HostMemory(index=index))
    major = fake_trt.__version__.rsplit(".", 1)[0]
    return write_engine(runtime_onnx, tmp_path / "small.engine", major)


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_eval_gives_the_onnx_models_map(engine, runtime_onnx, voc_root, capsys):
    assert runtime_main(["eval", "--model", str(runtime_onnx), "--data", str(voc_root), "--json"]) == 0
    reference = _json(capsys)
    argv = ["eval", "--model", str(engine), "--data", str(voc_root), "--device", "cuda", "--batch-size", "4", "--json"]
    assert runtime_main(argv) == 0
    report = _json(capsys)
    assert report["backend"] == "TensorRTBackend"
    assert report["runtime"]["map"] == pytest.approx(reference["runtime"]["map"], abs=1e-9)


def test_bench_and_detect_run_engines(engine, voc_root, tmp_path, capsys):
    argv = ["bench", "--model", str(engine), "--device", "cuda", "--batch-sizes", "1", "2", "--warmup", "0",
            "--iterations", "1", "--cuda-graph", "--json"]
    assert runtime_main(argv) == 0
    report = _json(capsys)
    assert [r["batch_size"] for r in report["results"]] == [1, 2] and report["options"]["cuda_graph"] is True
    image = min((voc_root / "JPEGImages").glob("*.jpg"))
    assert runtime_main(["detect", "--model", str(engine), "--device", "cuda", "--out", str(tmp_path / "d"), "--json",
                         str(image)]) == 0
    assert (tmp_path / "d" / f"{image.stem}.json").is_file()


def test_default_cpu_device_says_to_pass_cuda(engine, voc_root, capsys):
    assert runtime_main(["eval", "--model", str(engine), "--data", str(voc_root)]) == 2
    assert "--device cuda" in capsys.readouterr().err
