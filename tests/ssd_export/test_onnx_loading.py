"""Loading rules for ONNX files: external data that could escape the model folder, files not exported by this toolkit."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from ssd_runtime.onnx_model import OnnxModelError, check_external_data, read_onnx_spec



def _with_external(model_path: Path, folder: Path, location: str) -> Path:
    proto = onnx.load(str(model_path))
    tensor = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    path = folder / "external.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../x.bin", "..\\x.bin"])
def test_external_data_escaping_the_folder_is_refused(fp32_dynamic, tmp_path: Path, location: str):
    path = _with_external(fp32_dynamic.output, tmp_path, location)
    with pytest.raises(OnnxModelError, match="refused"):
        check_external_data(path)
    with pytest.raises(OnnxModelError, match="refused"):
        read_onnx_spec(path)


def test_external_data_symlink_out_of_the_folder_is_refused(fp32_dynamic, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "weights.bin").write_bytes(b"\0" * 64)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").symlink_to(outside / "weights.bin")
    path = _with_external(fp32_dynamic.output, model_dir, "weights.bin")
    with pytest.raises(OnnxModelError, match="outside the model folder"):
        check_external_data(path)
    (model_dir / "inside.bin").write_bytes(b"\0" * 64)
    assert check_external_data(_with_external(fp32_dynamic.output, model_dir, "inside.bin")) == ["inside.bin"]


def test_not_a_toolkit_onnx(tmp_path: Path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(OnnxModelError, match="not exported by this toolkit"):
        read_onnx_spec(path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff" * 100)
    with pytest.raises(OnnxModelError, match="not a readable ONNX"):
        read_onnx_spec(garbage)
