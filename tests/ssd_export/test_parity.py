"""The generic parity check (ssd_export.parity.check_parity) over several real backends and precisions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssd_export.onnx.export import export_onnx
from ssd_export.parity import (
    TOLERANCES,
    ReferenceOutputs,
    Tolerance,
    check_parity,
    reference_outputs,
    tolerance_for,
)
from ssd_runtime.backends import to_numpy
from ssd_runtime.backends.onnxruntime import OrtBackend
from ssd_train.backend import TorchCheckpointBackend


@pytest.fixture(scope="module")
def fp16_onnx(runtime_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fp16") / "ssd300-fp16.onnx"
    export_onnx(runtime_checkpoint, out, variant="fp16", verify=False)
    return out


@pytest.fixture(scope="module")
def reference(runtime_checkpoint: Path) -> ReferenceOutputs:
    """The checkpoint's outputs on 3 verification scenes, computed once for the module's checks."""
    return reference_outputs(runtime_checkpoint, batch_size=3)


class Perturbed:
    """A real backend whose outputs are shifted: boxes moved, class 1 favoured (what a broken build gives)."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.spec, self.path = backend.spec, backend.path
        self.input_kind, self.device = backend.input_kind, backend.device

    def infer(self, batch):
        locs, class_logits = (to_numpy(x).copy() for x in self.backend.infer(batch))
        locs += 0.5
        class_logits[..., 1] += 1.0
        return locs, class_logits


def _backend(kind: str, checkpoint: Path, runtime_onnx: Path, fp16_onnx: Path):
    return {
        "torch-fp32": lambda: TorchCheckpointBackend(checkpoint),
        "torch-fp16": lambda: TorchCheckpointBackend(checkpoint, fp16=True),
        "ort-fp32": lambda: OrtBackend(runtime_onnx),
        "ort-fp16": lambda: OrtBackend(fp16_onnx),
    }[kind]()


@pytest.mark.parametrize("kind, precision", [("torch-fp32", "fp32"), ("torch-fp16", "fp16"),
                                             ("ort-fp32", "fp32"), ("ort-fp16", "fp16")])
def test_backends_pass_at_their_precision(kind, precision, runtime_checkpoint, runtime_onnx, fp16_onnx, reference):
    backend = _backend(kind, runtime_checkpoint, runtime_onnx, fp16_onnx)
    report = check_parity(backend, reference, precision, batch_size=3)
    assert report["passed"], report["failures"]
    assert report["precision"] == precision and report["spec_matches"]
    assert report["backend"]["input_kind"] == backend.input_kind and report["batch_size"] == 3
    assert set(report["outputs"]) == {"locs", "class_logits"}
    for name in ("detection", "evaluation"):
        comparison = report["detections"][name]
        assert comparison["num_detections_a"] > 0
        if precision == "fp32":  # required
            assert comparison["identical"], comparison
        else:  # reported, with the comparison at the precision's atol
            assert "identical_within_fp16_atol" in comparison
    if kind == "torch-fp32":  # the checkpoint against itself: trivially equal
        assert all(stats["max_abs"] == 0.0 for stats in report["outputs"].values())
        assert all(c["identical"] and c["num_mismatches"] == 0 for c in report["detections"].values())


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_perturbed_backend_fails(precision, runtime_onnx, runtime_checkpoint):
    report = check_parity(Perturbed(OrtBackend(runtime_onnx)), runtime_checkpoint, precision, batch_size=3)
    assert not report["passed"]
    assert any(f.startswith("locs:") for f in report["failures"])
    assert any(f.startswith("class_logits:") for f in report["failures"])
    assert not any(c["identical"] for c in report["detections"].values())
    detection_failures = [f for f in report["failures"] if f.startswith("detections")]
    assert len(detection_failures) == (2 if precision == "fp32" else 0)  # required only in fp32


def test_reference_is_a_checkpoint_a_backend_or_its_outputs(runtime_checkpoint, runtime_onnx, reference):
    backend = OrtBackend(runtime_onnx)
    by_path = check_parity(backend, runtime_checkpoint, batch_size=3)
    by_backend = check_parity(backend, TorchCheckpointBackend(runtime_checkpoint), batch_size=3)
    by_outputs = check_parity(backend, reference, batch_size=3)
    assert by_path["outputs"] == by_backend["outputs"] == by_outputs["outputs"]
    assert by_path["reference"] == str(runtime_checkpoint)
    assert by_backend["reference"].startswith("TorchCheckpointBackend(")
    np.testing.assert_array_equal(reference.locs, reference_outputs(runtime_checkpoint, 3).locs)
    with pytest.raises(ValueError, match="batch 3"):
        check_parity(backend, reference, batch_size=4)


def test_tolerance_table():
    assert TOLERANCES["fp32"].identical_detections and not TOLERANCES["fp16"].identical_detections
    assert tolerance_for("fp16") is TOLERANCES["fp16"]
    custom = Tolerance("int8", rtol=0.1, atol=0.1, range_ulps=1, ulp=2.0**-7, identical_detections=False)
    assert tolerance_for(custom) is custom
    with pytest.raises(ValueError, match="int8.*pass a ssd_export.parity.Tolerance"):
        tolerance_for("int8")
    fp32 = TOLERANCES["fp32"]
    assert fp32.atol_for(np.zeros(3)) == fp32.atol  # the floor
    assert fp32.atol_for(np.array([-1e4])) == pytest.approx(32 * 2.0**-23 * 1e4)  # ulps of the range


def test_verification_scenes_are_trainings_evaluation_view():
    # the scenes are what ssd-train data writes, resized as training's evaluation transform resizes them
    from ssd_export.parity import verification_images
    from ssd_train.augment import test_transform
    from ssd_train.synthetic import render_image

    empty = np.zeros((0, 4), np.float32)
    expected = np.stack([test_transform(render_image(11, i)[0], empty, 160)[0] for i in range(3)])
    np.testing.assert_array_equal(verification_images(3, 160, seed=11), expected)


NO_TRAINING = """
import sys
sys.modules["torch"] = None  # `import torch` raises ImportError, as on a Jetson without torch
import ssd_export.tensorrt.check
from ssd_export.parity import verification_inputs
from ssd_runtime.spec import ModelSpec
pixels, images = verification_inputs(ModelSpec.create(("background", "a", "b")), 2)
print(pixels.shape, images.shape, sorted(m for m in ("ssd_train", "torch") if sys.modules.get(m)))
"""


def test_engine_check_draws_its_scenes_without_torch_or_training():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", NO_TRAINING], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(2, 300, 300, 3) (2, 3, 300, 300) []"
