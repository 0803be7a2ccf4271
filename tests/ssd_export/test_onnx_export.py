"""ONNX export: static/dynamic batch, checker and opset, metadata round trip, variants, BatchNorm folding, failure."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ssd_export import parity
from ssd_export.defaults import TRACE_BATCH
from ssd_export.onnx.export import DEFAULT_OPSET, ParityError, export_onnx
from ssd_export.parity import Tolerance, verification_images
from ssd_runtime.fileio import sha256_file
from ssd_runtime.onnx_model import check_external_data, read_onnx_info, read_onnx_spec
from ssd_runtime.preprocess import normalize
from ssd_train.checkpoint import load_model, save_checkpoint
from tests.helpers.training import scene_batch, small_model, train_briefly


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_static_batch_1(runtime_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "static.onnx"
    result = export_onnx(runtime_checkpoint, out, dynamic_batch=False, static_batch=1)
    session = _session(out)
    assert session.get_inputs()[0].shape == [1, 3, 300, 300]
    assert [o.name for o in session.get_outputs()] == ["locs", "class_logits"]
    assert session.get_outputs()[0].shape == [1, 8732, 4]
    assert result.verification["passed"] and result.verification["batch_size"] == 1
    assert json.loads((tmp_path / "static.onnx.verify.json").read_text())["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["static.onnx", "static.onnx.verify.json"]


def test_checker_opset_and_single_file(fp32_dynamic):
    proto = onnx.load(str(fp32_dynamic.output))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    assert check_external_data(fp32_dynamic.output) == []  # everything inside the one file


def test_metadata_round_trip_from_the_file_alone(fp32_dynamic, runtime_checkpoint: Path):
    model, spec = load_model(runtime_checkpoint)
    info = read_onnx_info(fp32_dynamic.output)
    assert info.variant == "fp32" and info.opset == DEFAULT_OPSET and info.trace_batch == TRACE_BATCH
    assert {p.key: p.value for p in onnx.load(str(fp32_dynamic.output)).metadata_props}[
        "ssd300.trace_batch"] == str(TRACE_BATCH)  # the raw key, as other tools read it
    assert info.source_checkpoint_sha256 == sha256_file(runtime_checkpoint)
    assert dict(info.spec.provenance)["source_checkpoint_sha256"] == sha256_file(runtime_checkpoint)
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


def test_uint8_nhwc_variant(runtime_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "u8.onnx"
    report = export_onnx(runtime_checkpoint, out, variant="uint8-nhwc").verification
    assert report["passed"], report["failures"]
    inp = _session(out).get_inputs()[0]
    assert inp.type == "tensor(uint8)" and inp.shape == ["batch", 300, 300, 3]
    assert read_onnx_info(out).input_layout == "NHWC"


def test_fp16_variant_valid_error_reported_and_no_overflow(runtime_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "fp16.onnx"
    report = export_onnx(runtime_checkpoint, out, variant="fp16").verification
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
    model, spec = load_model(runtime_checkpoint)
    images = torch.from_numpy(normalize(verification_images(2, seed=5), spec))
    with torch.no_grad():
        base_sum_sq = float(model.base(images)[0].pow(2).sum(dim=1).max())
        images = images * float(np.sqrt(4 * 65504 / base_sum_sq))
        conv4_3, _ = model.base(images)
        sum_sq = float(conv4_3.pow(2).sum(dim=1).max())
        ref_locs, ref_logits = model(images)
        naive = _blanket_fp16(model, images)
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


def test_failed_parity_leaves_no_file(runtime_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "ssd300.onnx"
    out.write_bytes(b"previous good model")
    exact = Tolerance("fp32", rtol=0.0, atol=0.0, range_ulps=0, ulp=0.0, identical_detections=True)
    monkeypatch.setitem(parity.TOLERANCES, "fp32", exact)
    with pytest.raises(ParityError) as info:
        export_onnx(runtime_checkpoint, out, dynamic_batch=False)
    assert not info.value.report["passed"]
    assert out.read_bytes() == b"previous good model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssd300.onnx"]


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_parity(runtime_checkpoint: Path, tmp_path: Path):
    report = export_onnx(runtime_checkpoint, tmp_path / "dynamo.onnx", exporter="dynamo").verification
    assert report["passed"], report["failures"]


@pytest.mark.parametrize("norm", ["batch", "batch-from-conv2"])
def test_batch_norm_model_exports_folded(tmp_path: Path, norm: str):
    model, spec = small_model(norm=norm)
    images, boxes, labels = scene_batch(4, spec)
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


def _blanket_fp16(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Everything in FP16, the L2 norm too (what a blanket FP16 conversion gives): outputs in float32."""
    locs, class_logits = copy.deepcopy(model).eval().half()(images.to(torch.float16))
    return locs.to(torch.float32), class_logits.to(torch.float32)
