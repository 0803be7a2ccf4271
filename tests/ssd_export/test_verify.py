"""ONNX verification (ssd_export.onnx.verify): parity at another batch size, another checkpoint, the tolerance floor."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ssd_export.parity import TOLERANCES, verification_images
from ssd_export.onnx.verify import verify_onnx
from ssd_runtime.preprocess import normalize
from ssd_train.checkpoint import load_model


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_dynamic_batch_parity_at_another_batch_size(fp32_dynamic, runtime_checkpoint: Path):
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
    model, spec = load_model(runtime_checkpoint)
    assert session.get_inputs()[0].shape[0] == "batch"
    for batch in (1, 5):
        images = normalize(verification_images(batch, seed=99), spec)
        locs, logits = session.run(None, {"images": images})
        with torch.no_grad():
            ref_locs, ref_logits = model(torch.from_numpy(images))
        assert locs.shape == (batch, 8732, 4) and logits.shape == (batch, 8732, spec.num_classes)
        fp32 = TOLERANCES["fp32"]  # the range-relative floor: summation order differs from CPU to CPU
        np.testing.assert_allclose(locs, ref_locs.numpy(), rtol=fp32.rtol, atol=fp32.atol_for(ref_locs.numpy()))
        np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=fp32.rtol, atol=fp32.atol_for(ref_logits.numpy()))


def test_an_int8_model_is_verified_with_its_parity_reported_not_judged(engine_sources, runtime_checkpoint, capsys):
    from ssd_export.cli import main

    report = verify_onnx(engine_sources["int8"], runtime_checkpoint)
    assert report["variant"] == "int8" and report["judged"] is False
    assert report["passed"], report["failures"]  # the rules, the checkpoint and the spec are judged
    assert report["tensorrt_rules"]["violations"] == [] and report["spec_matches"]
    assert report["precision"] == "int8" and isinstance(report["outside_tolerance"], list)
    assert main(["verify", "--model", str(engine_sources["int8"]), "--checkpoint", str(runtime_checkpoint)]) == 0
    assert "reported, not judged" in capsys.readouterr().out


def test_verify_against_another_checkpoint_fails(fp32_dynamic, runtime_checkpoint: Path, tmp_path: Path):
    from ssd_train.checkpoint import save_checkpoint

    model, spec = load_model(runtime_checkpoint)
    with torch.no_grad():
        model.pred_convs.cl_conv7.bias.add_(1.0)
    other = save_checkpoint(tmp_path / "other.pt", model, spec)
    report = verify_onnx(fp32_dynamic.output, other)
    assert not report["passed"]
    assert not report["source_checkpoint_matches"]


def test_tolerance_floor_follows_the_output_range(fp32_dynamic):
    report = fp32_dynamic.verification
    for name in ("locs", "class_logits"):
        expected_max = report["outputs"][name]["max_abs_expected"]
        floor = 32 * 2.0**-23 * expected_max  # 32 FP32 ulps of the output's range
        assert report["tolerance"][f"atol_{name}"] == pytest.approx(max(1e-5, floor))
        assert report["outputs"][name]["max_abs"] <= report["tolerance"][f"atol_{name}"] + 1e-3 * expected_max
