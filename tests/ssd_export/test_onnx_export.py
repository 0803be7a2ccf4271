"""ONNX export: static/dynamic batch, metadata round trip, ORT parity, variants, failure and loading rules."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ssd_export import verify as verify_module
from ssd_export.cli import main
from ssd_export.onnx_export import DEFAULT_OPSET, ParityError, export_onnx
from ssd_export.verify import verification_images, verify_onnx
from ssd_runtime.preprocess import normalize
from ssd_export.wrappers import NaiveFP16Network
from ssd_runtime.fileio import sha256_file
from ssd_runtime.onnx_model import OnnxModelError, check_external_data, read_onnx_info, read_onnx_spec
from ssd_runtime.spec import EVALUATION_SETTINGS
from ssd_train.checkpoint import load_model


@pytest.fixture(scope="module")
def fp32_dynamic(trained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("fp32") / "ssd300.onnx"
    return export_onnx(trained_checkpoint, out)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_static_batch_1(trained_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "static.onnx"
    result = export_onnx(trained_checkpoint, out, dynamic_batch=False, static_batch=1)
    session = _session(out)
    assert session.get_inputs()[0].shape == [1, 3, 300, 300]
    assert [o.name for o in session.get_outputs()] == ["locs", "class_logits"]
    assert session.get_outputs()[0].shape == [1, 8732, 4]
    assert result.verification["passed"] and result.verification["batch_size"] == 1
    assert json.loads((tmp_path / "static.onnx.verify.json").read_text())["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["static.onnx", "static.onnx.verify.json"]


def test_dynamic_batch_parity_at_another_batch_size(fp32_dynamic, trained_checkpoint: Path):
    report = fp32_dynamic.verification
    print("fp32 parity:", json.dumps(report["outputs"]))
    assert report["passed"], report["failures"]
    assert report["dynamic_batch"] and report["batch_size"] != report["trace_batch"]
    for stats in report["outputs"].values():
        assert stats["allclose"] and stats["max_abs"] < 1e-3
    for name in ("detection", "evaluation"):
        assert report["detections"][name]["identical"], report["detections"][name]
    # other batch sizes, directly: 38/19/10/5/3/1 maps -> 8732 priors at every batch size
    session = _session(fp32_dynamic.output)
    model, spec = load_model(trained_checkpoint)
    assert session.get_inputs()[0].shape[0] == "batch"
    for batch in (1, 5):
        images = normalize(verification_images(batch, seed=99), spec)
        locs, logits = session.run(None, {"images": images})
        with torch.no_grad():
            ref_locs, ref_logits = model(torch.from_numpy(images))
        assert locs.shape == (batch, 8732, 4) and logits.shape == (batch, 8732, spec.num_classes)
        np.testing.assert_allclose(locs, ref_locs.numpy(), rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=1e-3, atol=1e-5)


def test_checker_opset_and_single_file(fp32_dynamic):
    proto = onnx.load(str(fp32_dynamic.output))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    assert check_external_data(fp32_dynamic.output) == []  # everything inside the one file


def test_metadata_round_trip_from_the_file_alone(fp32_dynamic, trained_checkpoint: Path):
    model, spec = load_model(trained_checkpoint)
    info = read_onnx_info(fp32_dynamic.output)
    assert info.variant == "fp32" and info.opset == DEFAULT_OPSET
    assert info.source_checkpoint_sha256 == sha256_file(trained_checkpoint)
    assert dict(info.spec.provenance)["source_checkpoint_sha256"] == sha256_file(trained_checkpoint)
    assert info.spec.class_names == spec.class_names
    np.testing.assert_array_equal(info.spec.make_priors(), model.priors_cxcy.numpy())
    # and in a fresh process that never imports torch or onnxruntime
    code = (
        "import sys, json; from ssd_runtime.onnx_model import read_onnx_spec; "
        f"s = read_onnx_spec({str(fp32_dynamic.output)!r}); p = s.make_priors(); "
        "print(json.dumps({'classes': list(s.class_names), 'priors': p.shape[0], "
        "'heavy': [m for m in ('torch', 'onnxruntime') if m in sys.modules]}))"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
    assert out == {"classes": list(spec.class_names), "priors": 8732, "heavy": []}


def test_uint8_nhwc_variant(trained_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "u8.onnx"
    report = export_onnx(trained_checkpoint, out, variant="uint8-nhwc").verification
    assert report["passed"], report["failures"]
    inp = _session(out).get_inputs()[0]
    assert inp.type == "tensor(uint8)" and inp.shape == ["batch", 300, 300, 3]
    assert read_onnx_info(out).input_layout == "NHWC"


def test_fp16_variant_valid_error_reported_and_no_overflow(trained_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "fp16.onnx"
    report = export_onnx(trained_checkpoint, out, variant="fp16").verification
    print("fp16 vs fp32:", json.dumps(report["outputs"]),
          {k: (v["identical"], v["identical_within_fp16_atol"]) for k, v in report["detections"].items()})
    assert report["passed"], report["failures"]
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    float_types = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16"}
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    weights = [float_types.get(t.data_type) for t in proto.graph.initializer if t.name in conv_weights]
    assert weights and set(weights) == {"fp16"}  # conv weights in FP16 (the L2 norm's rescale stays FP32)
    session = _session(out)
    assert session.get_inputs()[0].type == "tensor(float)"
    assert {o.type for o in session.get_outputs()} == {"tensor(float)"}
    # activations whose conv4_3 sum of squares exceeds FP16's 65,504 (as a full-width trained VGG's do
    # on real images): real images scaled up (the ReLU network is close to positively homogeneous)
    model, spec = load_model(trained_checkpoint)
    images = torch.from_numpy(normalize(verification_images(2, seed=5), spec))
    with torch.no_grad():
        base_sum_sq = float(model.base(images)[0].pow(2).sum(dim=1).max())
        images = images * float(np.sqrt(4 * 65504 / base_sum_sq))
        conv4_3, _ = model.base(images)
        sum_sq = float(conv4_3.pow(2).sum(dim=1).max())
        ref_locs, ref_logits = model(images)
        naive = NaiveFP16Network(model)(images)
    assert sum_sq > 65504, sum_sq
    locs, logits = session.run(None, {"images": images.numpy()})
    assert np.isfinite(locs).all() and np.isfinite(logits).all()
    scale = np.abs(ref_logits.numpy()).max()
    rel = float(np.abs(logits - ref_logits.numpy()).max() / scale)
    # the blanket FP16 network's sum of squares overflows to inf: conv4_3 features become x / inf = 0
    naive_rel = float(np.abs(naive[1].numpy() - ref_logits.numpy()).max() / scale)
    print(f"fp16 at conv4_3 sum of squares {sum_sq:.3g}: max logit error / max |logit| = {rel:.3g} "
          f"(FP32 L2 norm), {naive_rel:.3g} (all FP16)")
    assert rel < 0.05 and naive_rel > 10 * rel


@pytest.mark.parametrize("settings_name", ["detection", "evaluation"])
def test_end2end_matches_reference_postprocess(trained_checkpoint: Path, tmp_path: Path, settings_name: str):
    _, spec = load_model(trained_checkpoint)
    settings = spec.detection if settings_name == "detection" else EVALUATION_SETTINGS
    out = tmp_path / "e2e.onnx"
    report = export_onnx(trained_checkpoint, out, variant="end2end", end2end_settings=settings,
                         max_candidates=10**6).verification
    comparison = report["detections"]["end2end"]
    print(f"end2end at {settings_name} settings:", {k: v for k, v in comparison.items() if k != "mismatches"})
    assert comparison["identical"], comparison
    assert comparison["num_detections_a"] > 0
    session = _session(out)
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "num_detections"]
    boxes, scores, labels, num = session.run(None, {"images": normalize(verification_images(1, seed=3), spec)})
    assert boxes.shape == (1, 200, 4) and scores.shape == labels.shape == (1, 200) and num.shape == (1,)
    assert (labels[0, num[0]:] == -1).all() and (scores[0, num[0]:] == 0).all()


def test_failed_parity_leaves_no_file(trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "ssd300.onnx"
    out.write_bytes(b"previous good model")
    monkeypatch.setattr(verify_module, "FP32_TOLERANCE", {"rtol": 0.0, "atol": 0.0})
    monkeypatch.setattr(verify_module, "RANGE_ULPS", {"fp32": (0, 0.0), "fp16": (0, 0.0)})
    with pytest.raises(ParityError) as info:
        export_onnx(trained_checkpoint, out, dynamic_batch=False)
    assert not info.value.report["passed"]
    assert out.read_bytes() == b"previous good model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssd300.onnx"]


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


def test_cli_onnx_and_verify(fp32_dynamic, trained_checkpoint: Path, tmp_path: Path, capsys):
    assert main(["verify", "--model", str(fp32_dynamic.output), "--checkpoint", str(trained_checkpoint),
                 "--batch", "2", "--json", "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["batch_size"] == 3  # 2 is the traced batch size: moved off it
    assert json.loads((tmp_path / "r.json").read_text())["passed"]
    out = tmp_path / "cli.onnx"
    assert main(["onnx", "--checkpoint", str(trained_checkpoint), "-o", str(out), "--static-batch", "2",
                 "--no-verify"]) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()
    assert _session(out).get_inputs()[0].shape[0] == 2
    assert main(["onnx", "--checkpoint", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()


def test_verify_against_another_checkpoint_fails(fp32_dynamic, trained_checkpoint: Path, tmp_path: Path):
    from ssd_train.checkpoint import save_checkpoint

    model, spec = load_model(trained_checkpoint)
    with torch.no_grad():
        model.pred_convs.cl_conv7.bias.add_(1.0)
    other = save_checkpoint(tmp_path / "other.pt", model, spec)
    report = verify_onnx(fp32_dynamic.output, other)
    assert not report["passed"]
    assert not report["source_checkpoint_matches"]


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_parity(trained_checkpoint: Path, tmp_path: Path):
    report = export_onnx(trained_checkpoint, tmp_path / "dynamo.onnx", exporter="dynamo").verification
    assert report["passed"], report["failures"]


@pytest.mark.parametrize("norm", ["batch", "batch-from-conv2"])
def test_batch_norm_model_exports_folded(tmp_path: Path, norm: str):
    from ssd_runtime.spec import ModelSpec
    from ssd_train.checkpoint import save_checkpoint
    from ssd_train.model import SSD300
    from ssd_train.synthetic import CLASS_NAMES
    from tests.conftest import train_briefly
    from tests.ssd_export.conftest import _training_batch

    torch.manual_seed(0)
    spec = ModelSpec.create(CLASS_NAMES, width=0.125, norm=norm)
    model = SSD300.from_spec(spec)
    images, boxes, labels = _training_batch(4, spec)
    train_briefly(model, images, boxes, labels, steps=12, pairs=2)
    model.train()  # BatchNorm statistics of the final weights on real scenes, as a long training has
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        model(images)
    model.eval()
    checkpoint = save_checkpoint(tmp_path / "bn.pt", model, spec)
    out = tmp_path / "bn.onnx"
    result = export_onnx(checkpoint, out)
    assert result.verification["passed"], result.verification
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    assert read_onnx_spec(out).norm == norm


def test_tolerance_floor_follows_the_output_range(fp32_dynamic):
    report = fp32_dynamic.verification
    for name in ("locs", "class_logits"):
        expected_max = report["outputs"][name]["max_abs_expected"]
        floor = 32 * 2.0**-23 * expected_max  # 32 FP32 ulps of the output's range
        assert report["tolerance"][f"atol_{name}"] == pytest.approx(max(1e-5, floor))
        assert report["outputs"][name]["max_abs"] <= report["tolerance"][f"atol_{name}"] + 1e-3 * expected_max
