"""GPU training-step throughput: SSD300 (this toolkit) vs torchvision's ssd300_vgg16, same run.

Full width, batch 32, synthetic tensors on the device (no data loading), FP32 and AMP bf16
(channels_last). Step = forward + MultiBox loss (matching, hard negative mining) + backward + SGD.
Prints one JSON object; prints {"skipped": ...} without CUDA.

    python -m benchmarks.train_step_gpu [--batch 32] [--iters 20] [--loader-images 1200] [--workers N]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def _synthetic_targets(batch: int, device: torch.device, generator: torch.Generator):
    boxes, labels = [], []
    for _ in range(batch):
        n = int(torch.randint(1, 6, (1,), generator=generator))
        xy = torch.rand(n, 2, generator=generator) * 0.6
        wh = torch.rand(n, 2, generator=generator) * 0.35 + 0.05
        boxes.append(torch.cat([xy, xy + wh], 1))  # on the CPU, as the DataLoader yields them
        labels.append(torch.randint(1, 21, (n,), generator=generator))
    return boxes, labels


def _time_steps(step, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def bench_ours(batch: int, amp: bool, iters: int) -> dict:
    from ssd_train import SSD300, MultiBoxLoss

    device = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    model = SSD300(21).to(device)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    criterion = MultiBoxLoss(model.priors_cxcy)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(batch, 3, 300, 300, generator=g).to(device)
    if amp:
        images = images.contiguous(memory_format=torch.channels_last)
    boxes, labels = _synthetic_targets(batch, device, g)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            locs, logits = model(images)
        loss = criterion(locs, logits, boxes, labels).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    seconds = _time_steps(step, 5, iters)
    return {"images_per_s": round(batch / seconds, 1), "ms_per_step": round(seconds * 1e3, 2)}


def bench_torchvision(batch: int, amp: bool, iters: int) -> dict:
    import torchvision

    device = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    model = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).to(device)
    model.train()
    if amp:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    images = list(torch.rand(batch, 3, 300, 300, generator=g).to(device).unbind(0))
    boxes, labels = _synthetic_targets(batch, device, g)
    targets = [{"boxes": (b * 300).to(device), "labels": lab.to(device)} for b, lab in zip(boxes, labels)]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    seconds = _time_steps(step, 5, iters)
    return {"images_per_s": round(batch / seconds, 1), "ms_per_step": round(seconds * 1e3, 2)}


def bench_real_loader(batch: int, amp: bool, workers: int, images: int, iterations: int) -> dict:
    """``ssd_train.train.fit`` on the generated VOC-format dataset: the full step with the real DataLoader."""
    import csv
    import tempfile

    from ssd_train.synthetic import generate_voc_dataset
    from ssd_train.train import TrainConfig, fit

    root = Path(tempfile.gettempdir()) / f"ssd_bench_shapes_{images}"
    if not (root / "dataset.json").is_file():
        generate_voc_dataset(root, images=images, test=max(8, images // 10), seed=0, workers=workers)
    out = Path(tempfile.mkdtemp(prefix="ssd_bench_fit_"))
    log_every = 10
    fit(TrainConfig(data=[str(root)], out=str(out), batch_size=batch, iterations=iterations, device="cuda",
                    amp="bf16" if amp else "none", channels_last=amp, workers=workers, log_every=log_every,
                    save_every=10**9, progress=False))
    with open(out / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["images_per_s"]]
    steady = [float(r["images_per_s"]) for r in rows[2:]] or [float(r["images_per_s"]) for r in rows]
    return {"images_per_s": round(sum(steady) / len(steady), 1), "workers": workers,
            "windows": [round(v, 1) for v in steady]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--loader-images", type=int, default=1200, help="generated images for the DataLoader runs (0 skips)")
    parser.add_argument("--loader-iterations", type=int, default=50)
    parser.add_argument("--workers", type=int, default=min(14, (os.cpu_count() or 2) - 1))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(json.dumps({"benchmark": "train_step_gpu", "skipped": "no CUDA device"}))
        return 0
    torch.backends.cudnn.benchmark = True
    result = {"benchmark": "train_step_gpu", "device": torch.cuda.get_device_name(), "batch": args.batch, "synthetic_tensors": True}
    for amp in (False, True):
        mode = "amp_bf16_channels_last" if amp else "fp32"
        result[f"torchvision_ssd300_vgg16_{mode}"] = bench_torchvision(args.batch, amp, args.iters)
        result[f"ours_{mode}"] = bench_ours(args.batch, amp, args.iters)
        result[f"speedup_{mode}"] = round(
            result[f"ours_{mode}"]["images_per_s"] / result[f"torchvision_ssd300_vgg16_{mode}"]["images_per_s"], 2
        )
    if args.loader_images:
        for amp in (True, False):
            mode = "amp_bf16_channels_last" if amp else "fp32"
            result[f"ours_real_dataloader_{mode}"] = bench_real_loader(
                args.batch, amp, args.workers, args.loader_images, args.loader_iterations)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
