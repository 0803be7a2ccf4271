"""Benchmark: NumPy postprocess vs decode + torchvision ``batched_nms`` on the CPU (JSON on stdout).

Baseline and candidate run interleaved in one process, single-threaded (BLAS/OpenMP pools and
torch set to one thread), at evaluation settings (about 400 candidates per class per image) and at
detection settings. Run: ``python -m benchmarks.postprocess [--images 8] [--repeats 7]``.
"""
from __future__ import annotations

import os

from benchmarks.common import single_threaded

single_threaded()  # before NumPy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from ssd_runtime.compare import compare_detections  # noqa: E402
from ssd_runtime.postprocess import postprocess  # noqa: E402
from ssd_runtime.priors import make_priors  # noqa: E402
from ssd_runtime.spec import DETECTION_SETTINGS, EVALUATION_SETTINGS, PostprocessSettings  # noqa: E402
from tests.helpers.synthetic_outputs import synthetic_outputs  # noqa: E402


def baseline_torchvision(locs_t, logits_t, priors_t, settings: PostprocessSettings) -> list:
    """The straightforward torch postprocess on CPU tensors: per image softmax, decode, threshold,
    batched_nms (torchvision), top_k."""
    import torch
    from torchvision.ops import batched_nms

    from ssd_runtime.boxes_torch import cxcywh_to_xyxy, decode

    out = []
    for n in range(logits_t.shape[0]):
        scores = torch.softmax(logits_t[n], dim=-1)[:, 1:]
        boxes = cxcywh_to_xyxy(decode(locs_t[n], priors_t))
        prior, cls0 = torch.nonzero(scores > settings.min_score, as_tuple=True)
        cand_scores = scores[prior, cls0]
        keep = batched_nms(boxes[prior], cand_scores, cls0, settings.max_overlap)[: settings.top_k]
        out.append((boxes[prior[keep]], cls0[keep] + 1, cand_scores[keep]))
    return out


def _time(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def bench(settings: PostprocessSettings, num_images: int, repeats: int, seed: int) -> dict:
    priors = make_priors()
    locs, logits = synthetic_outputs(priors, num_images, seed=seed)
    candidates = float(
        (_softmax_np(logits)[..., 1:] > settings.min_score).sum() / num_images / (logits.shape[2] - 1)
    )
    # warm up both, and check the NumPy result against the torch reference
    from ssd_runtime.postprocess_torch import postprocess_torch
    import torch

    reference = postprocess_torch(torch.from_numpy(locs), torch.from_numpy(logits), priors, settings)
    comparison = compare_detections(postprocess(locs, logits, priors, settings), reference, settings)
    tensors = [torch.from_numpy(np.array(a)) for a in (locs, logits, priors)]  # shares memory
    baseline_torchvision(*tensors, settings)
    base, cand = [], []
    for _ in range(repeats):
        base.append(_time(baseline_torchvision, *tensors, settings) / num_images)
        cand.append(_time(postprocess, locs, logits, priors, settings) / num_images)
    base_ms, cand_ms = 1e3 * np.median(base), 1e3 * np.median(cand)
    return {
        "settings": settings.to_dict(),
        "images": num_images,
        "repeats": repeats,
        "candidates_per_class_per_image": round(candidates, 1),
        "baseline_torchvision_ms_per_image": round(float(base_ms), 3),
        "numpy_ms_per_image": round(float(cand_ms), 3),
        "speedup_median": round(float(base_ms / cand_ms), 2),
        "speedup_per_repeat_median": round(float(np.median(np.asarray(base) / np.asarray(cand))), 2),
        "identical_to_torch_reference": comparison.identical,
        "edge_differences": comparison.edge_differences,
    }


def _softmax_np(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    result = {
        "threads": {"torch": torch.get_num_threads(), "omp_env": os.environ["OMP_NUM_THREADS"]},
        "evaluation": bench(EVALUATION_SETTINGS, args.images, args.repeats, args.seed),
        "detection": bench(DETECTION_SETTINGS, args.images, args.repeats, args.seed),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
