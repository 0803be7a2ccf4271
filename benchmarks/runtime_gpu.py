"""GPU benchmark of the fastest runtime path (JSON on stdout); prints {"skipped": ...} without CUDA.

The fastest GPU path without TensorRT: the PyTorch-checkpoint backend with an FP16 network (conv4_3
norm in FP32), channels_last, and the network plus the static-shape postprocess
(``postprocess_torch_padded`` at the detection settings) captured in one CUDA graph. Measured from a
preprocessed float32 batch already on the device to final detections (padded device tensors; also
with the copy of the detections to the host): batch-1 latency (min/p50/p90/p99/max) and batch-32
throughput. Also the network alone (graph replay, no postprocess), the same path in FP32, and, as the
baseline measured in the same run, torchvision's ``ssd300_vgg16`` (weights=None, eval, FP32, the
same images scaled to [0, 1], its own transform and postprocess) end to end.

Weights are random for both models (no downloads here). The padded postprocess has static shapes,
so its cost does not depend on how many detections there are; torchvision's does.

    python -m benchmarks.runtime_gpu [--repeats 200] [--device cuda|cpu]  (cpu: a dry run, no graphs)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import torch_skip_reason


def _stats(seconds: list[float], batch: int) -> dict:
    from ssd_runtime.bench import latency_stats

    return latency_stats(seconds, batch)


def _time(fn, sync, repeats: int, warmup: int = 10) -> list[float]:
    """Per-call wall times (each call synchronised)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=200, help="timed batch-1 calls (batch 32: repeats / 5)")
    parser.add_argument("--big-batch", type=int, default=32)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--max-candidates", type=int, default=200)
    parser.add_argument("--nms-iterations", type=int, default=10)
    args = parser.parse_args(argv)
    if (reason := torch_skip_reason(args.device)) is not None:
        print(json.dumps({"skipped": reason}))
        return 0
    import torch

    cuda = args.device.startswith("cuda")

    from ssd_runtime.postprocess_torch import postprocess_torch_padded
    from ssd_runtime.spec import ModelSpec
    from ssd_train.backend import TorchCheckpointBackend
    from ssd_train.checkpoint import save_checkpoint
    from ssd_train.model import SSD300

    device = torch.device(args.device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    report: dict = {"benchmark": "runtime_gpu", "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(device) if cuda else "cpu (dry run: no CUDA graphs)",
                    "width": args.width, "max_candidates": args.max_candidates,
                    "nms_iterations": args.nms_iterations}
    torch.manual_seed(0)
    spec = ModelSpec.create(width=args.width)
    settings = spec.detection
    report["settings"] = settings.to_dict()
    generator = torch.Generator().manual_seed(1)
    pixels = {n: torch.rand(n, 3, spec.input_size, spec.input_size, generator=generator) for n in (1, args.big_batch)}
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    # the preprocessed batch on the device (normalized float32, as the runtime's preprocess makes it)
    batches = {n: ((p - mean) / std).to(device) for n, p in pixels.items()}
    repeats = {1: args.repeats, args.big_batch: max(5, args.repeats // 5)}

    with tempfile.TemporaryDirectory(prefix="runtime-gpu-") as tmp:
        checkpoint = save_checkpoint(Path(tmp) / "ssd300.pt", SSD300.from_spec(spec), spec)
        paths = {}
        for name, fp16 in (("fp16", True), ("fp32", False)):
            backend = TorchCheckpointBackend.load(checkpoint, device=str(device), fp16=fp16, channels_last=True,
                                                  cuda_graph=cuda)
            for n, batch in batches.items():
                batch_cl = batch.contiguous(memory_format=torch.channels_last)
                if cuda:
                    full = backend.capture(n, settings, max_candidates=args.max_candidates,
                                           nms_iterations=args.nms_iterations)
                    net = backend.capture(n)

                    def end_to_end(full=full, batch_cl=batch_cl):
                        return full.run(batch_cl)

                    def network(net=net, batch_cl=batch_cl):
                        return net.run(batch_cl)
                else:
                    def network(backend=backend, batch_cl=batch_cl):
                        return backend.infer(batch_cl)

                    # bound now: `backend` is deleted after each precision's loop (late binding would break)
                    def end_to_end(network=network, priors=backend.priors):
                        locs, logits = network()
                        return postprocess_torch_padded(locs, logits, priors, settings, spec.variances,
                                                        max_candidates=args.max_candidates,
                                                        nms_iterations=args.nms_iterations)
                with torch.no_grad():
                    entry = {
                        "end_to_end_device": _stats(_time(end_to_end, sync, repeats[n]), n),
                        "end_to_end_to_host": _stats(_time(lambda: end_to_end().to_list(), sync, repeats[n]), n),
                        "network_only": _stats(_time(network, sync, repeats[n]), n),
                    }
                    padded = end_to_end()
                    sync()
                    entry["exact_fraction"] = float(padded.exact.float().mean().item())
                    entry["detections_per_image"] = float(padded.counts.float().mean().item())
                paths[f"{name}_batch{n}"] = entry
            del backend
        report["runtime"] = paths

    # baseline: torchvision's SSD300-VGG16, FP32 eager, end to end (its transform + postprocess)
    from torchvision.models.detection import ssd300_vgg16

    tv = ssd300_vgg16(weights=None, weights_backbone=None).eval().to(device)
    baseline = {}
    with torch.no_grad():
        for n, p in pixels.items():
            images = list(p.to(device))  # [0, 1] RGB 300x300, the same images
            times = _time(lambda images=images: tv(images), sync, repeats[n] if n == 1 else max(3, repeats[n] // 2),
                          warmup=3)
            baseline[f"batch{n}"] = _stats(times, n)
            out = tv(images)
            baseline[f"batch{n}"]["detections_per_image"] = float(np.mean([len(o["scores"]) for o in out]))
    report["torchvision_ssd300_vgg16"] = baseline
    ours = report["runtime"]["fp16_batch1"]["end_to_end_device"]["p50_ms"]
    theirs = baseline["batch1"]["p50_ms"]
    report["summary"] = {
        "fastest_batch1_p50_ms": ours,
        "torchvision_batch1_p50_ms": theirs,
        "speedup_batch1": round(theirs / ours, 2),
        "fastest_batch32_images_per_s": report["runtime"][f"fp16_batch{args.big_batch}"]["end_to_end_device"]["images_per_s"],
        "torchvision_batch32_images_per_s": baseline[f"batch{args.big_batch}"]["images_per_s"],
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
