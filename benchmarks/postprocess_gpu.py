"""GPU benchmark of the torch postprocess (JSON on stdout); prints {"skipped": ...} without CUDA.

Times, per batch at detection and evaluation settings: the straightforward torch postprocess
(softmax, nonzero, decode, batched_nms), the reference ``postprocess_torch``, the static-shape
``postprocess_torch_padded`` eagerly, and the padded variant captured in a CUDA graph (replayed).
Checks the padded result against the NumPy postprocess (identical detections) and reports its
``exact`` flags. ``--device cpu`` runs the same code without graphs (a dry run for CI machines).

    python -m benchmarks.postprocess_gpu [--device cuda|cpu] [--batch 1] [--repeats 100]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ssd_runtime.compare import compare_detections
from ssd_runtime.postprocess import postprocess
from ssd_runtime.priors import make_priors
from benchmarks.common import torch_skip_reason
from ssd_runtime.spec import DETECTION_SETTINGS, EVALUATION_SETTINGS, PostprocessSettings
from tests.helpers.synthetic_outputs import synthetic_outputs


def _straightforward(locs, logits, priors, settings: PostprocessSettings):
    """softmax, nonzero, decode, batched_nms (coordinate trick on the GPU), per-image top_k."""
    import torch
    from torchvision.ops import batched_nms

    from ssd_runtime.boxes_torch import cxcywh_to_xyxy, decode

    scores = torch.softmax(logits, dim=-1)[..., 1:]
    boxes = cxcywh_to_xyxy(decode(locs, priors))
    image, prior, cls0 = torch.nonzero(scores > settings.min_score, as_tuple=True)
    cand_scores = scores[image, prior, cls0]
    keep = batched_nms(boxes[image, prior], cand_scores, image * scores.shape[-1] + cls0, settings.max_overlap)
    return keep, image[keep]


def _time_ms(fn, device: str, repeats: int) -> float:
    import torch

    for _ in range(3):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        stop.record()
        torch.cuda.synchronize()
        return start.elapsed_time(stop) / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) * 1e3 / repeats


def bench(settings: PostprocessSettings, name: str, batch: int, device: str, repeats: int,
          max_candidates: int, iterations: int) -> dict:
    import torch

    from ssd_runtime.postprocess_torch import postprocess_torch, postprocess_torch_padded

    priors_np = make_priors()
    locs_np, logits_np = synthetic_outputs(priors_np, batch, seed=1)
    priors = torch.from_numpy(np.array(priors_np)).to(device)
    locs = torch.from_numpy(locs_np).to(device)
    logits = torch.from_numpy(logits_np).to(device)
    out: dict = {"settings": settings.to_dict(), "batch": batch, "max_candidates": max_candidates,
                 "nms_iterations": iterations}

    def padded():
        return postprocess_torch_padded(locs, logits, priors, settings, max_candidates=max_candidates,
                                        nms_iterations=iterations)

    expected = postprocess(locs_np, logits_np, priors_np, settings)
    result = padded()
    report = compare_detections(result.to_list(), expected, settings)
    out["padded_exact_flags_all"] = bool(result.exact.all())
    out["padded_identical_to_numpy"] = report.identical
    out["padded_edge_differences"] = report.edge_differences
    ref_report = compare_detections(postprocess_torch(locs, logits, priors, settings), expected, settings)
    out["reference_identical_to_numpy"] = ref_report.identical
    out["straightforward_ms"] = round(_time_ms(lambda: _straightforward(locs, logits, priors, settings), device, repeats), 4)
    out["reference_ms"] = round(_time_ms(lambda: postprocess_torch(locs, logits, priors, settings), device, max(3, repeats // 10)), 4)
    out["padded_eager_ms"] = round(_time_ms(padded, device, repeats), 4)
    if device == "cuda":
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                padded()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static = padded()
        graph.replay()
        torch.cuda.synchronize()
        graph_report = compare_detections(static.to_list(), expected, settings)
        out["graph_identical_to_numpy"] = graph_report.identical
        out["padded_graph_ms"] = round(_time_ms(graph.replay, device, repeats), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args(argv)
    if (reason := torch_skip_reason(args.device)) is not None:
        print(json.dumps({"skipped": reason}))
        return 0
    import torch

    result = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}
    for name, settings, cap in (("detection", DETECTION_SETTINGS, 128), ("evaluation", EVALUATION_SETTINGS, 512)):
        try:
            result[name] = bench(settings, name, args.batch, args.device, args.repeats, cap, iterations=16)
        except Exception as exc:  # report and go on: one JSON document whatever happens
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
