"""How far TF32 convolutions move a model's raw outputs: the measurement behind ``PRECISIONS["tf32"]``.

TensorRT enables ``BuilderFlag.TF32`` by default (NvInfer.h 10.3 and 11.1: "TF32 computes inner
products by rounding the inputs to 10-bit mantissas before multiplying, but accumulates the sum using
23-bit mantissas. Enabled by default."). No TF32 hardware is reachable here, so this emulates it on
the CPU: every convolution's input and weight are rounded to TF32 (the low 13 of FP32's 23 mantissa
bits dropped) and accumulated in FP32, the BatchNorms folded as every export folds them. Both
roundings are measured: truncation (masking the bits, the larger error) and round-to-nearest-even.

The error of each raw output is reported in TF32 ulps of the output's range,
``max|tf32 - fp32| / (2**-10 * max|fp32|)`` (the unit ``parity.Tolerance.range_ulps`` counts in), on
the verification scenes (``ssd_export.parity.verification_inputs``), for:

- ``test-model``: the test session's model (tests/conftest.py ``runtime_checkpoint``: width 0.125,
  14 Adam steps on a 24-image generated set);
- ``cpu-quick-100``: the ``cpu-quick`` recipe stopped at 100 iterations (undertrained models carry
  larger activations, as the FP16 measurement found);
- any checkpoint given with ``--checkpoint``.

    python -m benchmarks.tf32_emulation                       # both models (about a minute on 2 cores)
    python -m benchmarks.tf32_emulation --checkpoint runs/shapes/last.pt --images 16

CPU only; prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

#: FP32 keeps 23 mantissa bits, TF32 10: the 13 low bits go.
DROPPED_BITS = 13
TF32_ULP = 2.0**-10


def to_tf32(x: torch.Tensor, rounding: str) -> torch.Tensor:
    """float32 -> float32 holding TF32 values: ``"truncate"`` masks the low 13 mantissa bits, ``"nearest"``
    rounds to nearest, ties to even (exponent carries are handled by the integer add)."""
    bits = x.contiguous().view(torch.int32)
    if rounding == "nearest":
        half = (1 << (DROPPED_BITS - 1)) - 1
        bits = bits + half + ((bits >> DROPPED_BITS) & 1)
    elif rounding != "truncate":
        raise ValueError(f"rounding must be 'truncate' or 'nearest', got {rounding!r}")
    return (bits & ~((1 << DROPPED_BITS) - 1)).view(torch.float32)


def run_tf32(model: torch.nn.Module, images: torch.Tensor, rounding: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's (locs, class_logits) with every Conv2d's input and weight rounded to TF32."""
    originals, handles = {}, []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            originals[module] = module.weight.data.clone()
            module.weight.data = to_tf32(module.weight.data, rounding)
            handles.append(module.register_forward_pre_hook(lambda _m, args: (to_tf32(args[0], rounding),)))
    try:
        with torch.no_grad():
            locs, logits = model(images)
    finally:
        for handle in handles:
            handle.remove()
        for module, weight in originals.items():
            module.weight.data = weight
    return locs.numpy(), logits.numpy()


def measure(checkpoint: Path, images: int) -> dict:
    """FP32 vs TF32-emulated raw outputs of ``checkpoint`` on ``images`` verification scenes."""
    from ssd_export.parity import verification_inputs
    from ssd_train.checkpoint import load_model

    model, spec = load_model(checkpoint)
    model.fold_norms()
    model.eval()
    _, batch = verification_inputs(spec, images)
    inputs = torch.from_numpy(batch)
    with torch.no_grad():
        reference = [t.numpy() for t in model(inputs)]
    result: dict = {"checkpoint": str(checkpoint), "images": images}
    for rounding in ("truncate", "nearest"):
        outputs = run_tf32(model, inputs, rounding)
        per_output = {}
        for name, ours, ref in zip(("locs", "class_logits"), outputs, reference):
            diff = np.abs(ours.astype(np.float64) - ref)
            scale = float(np.abs(ref).max())
            per_output[name] = {"max_abs": float(diff.max()), "max_abs_expected": scale,
                                "range_ulps": float(diff.max() / (TF32_ULP * scale)),
                                "max_rel_over_1": float((diff / np.maximum(np.abs(ref), 1.0)).max())}
        result[rounding] = per_output
    return result


def test_model(folder: Path) -> Path:
    """The test session's model (tests/conftest.py ``runtime_checkpoint``), rebuilt the same way."""
    from ssd_train.synthetic import generate_voc_dataset
    from tests.helpers.training import session_checkpoint

    root = folder / "voc"
    generate_voc_dataset(root, images=24, test=8)
    return session_checkpoint(root, folder / "test-model.pt")


def cpu_quick(folder: Path, iterations: int) -> Path:
    """The ``cpu-quick`` recipe stopped at ``iterations`` on a 200-image generated set."""
    from ssd_train.config import TrainConfig
    from ssd_train.synthetic import generate_voc_dataset
    from ssd_train.train import fit

    root = folder / "shapes"
    generate_voc_dataset(root, images=200, test=20)
    config = TrainConfig.from_recipe("cpu-quick", data=str(root), out=str(folder / "cpu-quick"), iterations=iterations,
                                     warmup=min(200, iterations // 2), save_every=iterations, device="cpu")
    return Path(fit(config).last_checkpoint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, action="append", default=[], help="also measure this checkpoint")
    parser.add_argument("--images", type=int, default=8, help="verification scenes per model (default 8)")
    parser.add_argument("--iterations", type=int, default=100, help="cpu-quick iterations (default 100; 0 skips)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    start = time.perf_counter()
    report: dict = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = {"test-model": test_model(folder)}
        if args.iterations:
            models[f"cpu-quick-{args.iterations}"] = cpu_quick(folder, args.iterations)
        models.update({str(c): c for c in args.checkpoint})
        for name, path in models.items():
            report["models"][name] = measure(path, args.images)
            report["models"][name]["checkpoint"] = name if path.is_relative_to(folder) else str(path)
    report["worst_range_ulps"] = max(m[r][o]["range_ulps"] for m in report["models"].values()
                                     for r in ("truncate", "nearest") for o in ("locs", "class_logits"))
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
