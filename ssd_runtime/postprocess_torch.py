"""SSD postprocess in torch, on CPU or CUDA tensors: the PyTorch reference and the runtime GPU path.

Same contract and semantics as the NumPy :func:`ssd_runtime.postprocess.postprocess` (see its module
docstring): softmax, decode (boxes not clipped), per class keep scores > min_score, greedy NMS
suppressing IoU > max_overlap, top_k over all classes; order score desc, then class asc, then prior
asc. Imports torch (``ssd_runtime/__init__`` never imports this module); torchvision lazily.

Two implementations:

- :func:`postprocess_torch`, the reference: dynamic shapes, torchvision's NMS per (image, class)
  group. Exact; syncs with the host (fine for evaluation and tests).
- :func:`postprocess_torch_padded`, the device path: static shapes, no host synchronisation when
  ``nms_iterations`` is given, so the network and postprocess can be captured in one CUDA graph.
  Each class keeps its ``max_candidates`` best priors (``topk``), NMS is a suppression matrix
  resolved by a fixed-point iteration, and the output is padded to ``top_k``. It gives identical
  detections wherever its caps do not bind, and reports per image whether that held (``exact``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ssd_runtime.boxes import VARIANCES
from ssd_runtime.boxes_torch import cxcywh_to_xyxy, decode
from ssd_runtime.detections import Detections
from ssd_runtime.postprocess import _check_shapes
from ssd_runtime.spec import PostprocessSettings

__all__ = ["PaddedDetections", "postprocess_torch", "postprocess_torch_padded"]


def _scores_and_boxes(
    locs: torch.Tensor,
    class_logits: torch.Tensor,
    priors: torch.Tensor | np.ndarray,
    variances: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax scores (N, P, C) and decoded fractional xyxy boxes (N, P, 4), float32, on the device."""
    _check_shapes(tuple(locs.shape), tuple(class_logits.shape), tuple(priors.shape))
    if isinstance(priors, np.ndarray):  # priors from make_priors are read-only: copy
        priors = torch.from_numpy(np.array(priors, dtype=np.float32))
    priors_t = priors.to(device=class_logits.device, dtype=torch.float32)
    scores = torch.softmax(class_logits.float(), dim=-1)
    boxes = cxcywh_to_xyxy(decode(locs.float(), priors_t, variances))
    return scores, boxes


def postprocess_torch(
    locs: torch.Tensor,
    class_logits: torch.Tensor,
    priors: torch.Tensor | np.ndarray,
    settings: PostprocessSettings,
    variances: tuple[float, float] = VARIANCES,
) -> list[Detections]:
    """Reference postprocess: (N, P, 4) offsets and (N, P, C) logits -> one Detections per image.

    priors: (P, 4) fractional cxcywh (moved to the logits' device). Returns NumPy Detections (the
    detections are copied to the host; the raw outputs are not).
    """
    from torchvision.ops import nms

    num_images = class_logits.shape[0]
    scores, boxes = _scores_and_boxes(locs, class_logits, priors, variances)
    score_thr = float(settings.min_score_float32)
    # (N, P, C-1) -> (N, C-1, P): nonzero yields candidates in (image, class, prior) order
    fg_scores = scores[..., 1:].transpose(1, 2)
    image, cls0, prior = torch.nonzero(fg_scores > score_thr, as_tuple=True)
    if settings.top_k <= 0 or image.numel() == 0:
        return [Detections.empty() for _ in range(num_images)]
    cand_scores = fg_scores[image, cls0, prior]
    cand_boxes = boxes[image, prior]
    group = image * (fg_scores.shape[1]) + cls0
    # order (group, score desc, prior asc): stable sorts, last key first
    order = torch.sort(cand_scores, descending=True, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]
    _, counts = torch.unique_consecutive(group[order], return_counts=True)
    kept = []
    start = 0
    for count in counts.tolist():
        members = order[start : start + count]
        # strictly decreasing surrogate scores make torchvision follow our order exactly
        rank_scores = torch.arange(count, 0, -1, dtype=torch.float32, device=members.device)
        kept.append(members[nms(cand_boxes[members], rank_scores, settings.max_overlap)])
        start += count
    keep = torch.cat(kept)  # in (image, class, score desc) order
    # output order per image: score desc, class asc, prior asc (stable sorts keep class/prior order)
    keep = keep[torch.sort(cand_scores[keep], descending=True, stable=True).indices]
    keep = keep[torch.sort(image[keep], stable=True).indices]
    per_image = torch.bincount(image[keep], minlength=num_images).tolist()
    boxes_h = cand_boxes[keep].cpu().numpy()
    labels_h = (cls0[keep] + 1).cpu().numpy().astype(np.int64)
    scores_h = cand_scores[keep].cpu().numpy()
    results = []
    start = 0
    for count in per_image:
        stop = start + min(count, settings.top_k)
        results.append(
            Detections(boxes_h[start:stop].copy(), labels_h[start:stop].copy(), scores_h[start:stop].copy())
        )
        start += count
    return results


@dataclass
class PaddedDetections:
    """Fixed-shape detections of a batch, on the device (what a CUDA graph can output).

    boxes: float32 (N, top_k, 4) fractional xyxy; labels: int64 (N, top_k); scores: float32 (N, top_k),
    each valid in its first ``counts[n]`` rows (score-sorted, same order as :class:`Detections`) and
    zero after. counts: int64 (N,). exact: bool (N,), False where a cap bound (a class had more than
    ``max_candidates`` candidates that could reach the output, or the NMS iteration did not converge
    within ``nms_iterations``) and the result may differ from the reference.
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    counts: torch.Tensor
    exact: torch.Tensor

    def to_list(self) -> list[Detections]:
        """Per-image NumPy Detections (one copy to the host)."""
        boxes, labels, scores, counts = (
            t.cpu().numpy() for t in (self.boxes, self.labels, self.scores, self.counts)
        )
        return [
            Detections(boxes[n, :c].copy(), labels[n, :c].astype(np.int64), scores[n, :c].copy())
            for n, c in enumerate(counts.tolist())
        ]


def postprocess_torch_padded(
    locs: torch.Tensor,
    class_logits: torch.Tensor,
    priors: torch.Tensor | np.ndarray,
    settings: PostprocessSettings,
    variances: tuple[float, float] = VARIANCES,
    *,
    max_candidates: int = 512,
    nms_iterations: int | None = None,
) -> PaddedDetections:
    """Static-shape postprocess on the device: (N, P, 4), (N, P, C) -> :class:`PaddedDetections`.

    max_candidates: per image and class, only the best ``max_candidates`` priors enter NMS (memory
        and time grow with its square: N * (C-1) * max_candidates**2 IoUs).
    nms_iterations: None iterates the NMS fixed point until it converges (exact, syncs with the host
        every few iterations); an int runs exactly that many iterations (sync-free, CUDA-graph
        capturable) and reports non-convergence in ``exact``.
    Pass ``priors`` as a device tensor for graph capture (a NumPy array is copied each call).
    """
    scores, boxes = _scores_and_boxes(locs, class_logits, priors, variances)
    num_images, num_priors, num_classes = scores.shape
    top_k = settings.top_k
    if top_k <= 0:
        raise ValueError(f"postprocess_torch_padded needs top_k >= 1, got {top_k}")
    cap = max(1, min(max_candidates, num_priors))
    score_thr, iou_thr = float(settings.min_score_float32), float(settings.max_overlap_float32)
    # (N, P, C-1) -> (N, C-1, P)
    fg_scores = scores[..., 1:].transpose(1, 2)
    cand_scores, cand_prior = torch.topk(fg_scores, cap, dim=-1, sorted=True)  # (N, C-1, M)
    # deterministic order among equal scores: prior asc (stable sort by prior, then by score)
    by_prior = torch.sort(cand_prior, dim=-1, stable=True).indices
    cand_prior = torch.gather(cand_prior, -1, by_prior)
    cand_scores = torch.gather(cand_scores, -1, by_prior)
    by_score = torch.sort(cand_scores, dim=-1, descending=True, stable=True).indices
    cand_prior = torch.gather(cand_prior, -1, by_score)
    cand_scores = torch.gather(cand_scores, -1, by_score)
    valid = cand_scores > score_thr  # (N, C-1, M)
    # (N, P, 4) -> (N, C-1, M, 4) candidate boxes
    flat_prior = cand_prior.reshape(num_images, -1)
    cand_boxes = torch.gather(boxes, 1, flat_prior[..., None].expand(-1, -1, 4))
    cand_boxes = cand_boxes.reshape(num_images, num_classes - 1, cap, 4)
    suppress = _suppression_matrix(cand_boxes, iou_thr) & valid[..., :, None] & valid[..., None, :]
    keep, converged = _greedy_fixed_point(suppress, valid, nms_iterations)
    # top_k over all classes: flat order (class asc, rank asc) + stable sort = score, class, prior
    kept_scores = torch.where(keep, cand_scores, torch.full_like(cand_scores, -1.0))
    flat_scores = kept_scores.reshape(num_images, -1)  # (N, (C-1)*M)
    flat_boxes = cand_boxes.reshape(num_images, -1, 4)  # (N, (C-1)*M, 4)
    if flat_scores.shape[1] < top_k:  # fewer slots than top_k: pad with never-kept entries
        pad = top_k - flat_scores.shape[1]
        flat_scores = torch.cat([flat_scores, flat_scores.new_full((num_images, pad), -1.0)], dim=1)
        flat_boxes = torch.cat([flat_boxes, flat_boxes.new_zeros((num_images, pad, 4))], dim=1)
    order = torch.sort(flat_scores, dim=-1, descending=True, stable=True).indices[:, :top_k]
    out_scores = torch.gather(flat_scores, 1, order)
    out_valid = out_scores > -0.5
    counts = out_valid.sum(dim=1)
    out_boxes = torch.gather(flat_boxes, 1, order[..., None].expand(-1, -1, 4))
    out_boxes = torch.where(out_valid[..., None], out_boxes, torch.zeros_like(out_boxes))
    out_labels = torch.where(out_valid, torch.div(order, cap, rounding_mode="floor") + 1, 0)
    out_scores = torch.where(out_valid, out_scores, torch.zeros_like(out_scores))
    # exactness: a class with more than `cap` candidates is safe only if its unseen candidates (all
    # scoring <= its cap-th score) rank after a full output's last detection
    num_valid = (fg_scores > score_thr).sum(dim=-1)  # (N, C-1)
    capped = num_valid > cap
    last_seen = torch.where(capped, cand_scores[..., -1], torch.full_like(cand_scores[..., -1], -2.0))
    cut = torch.where(counts >= top_k, out_scores[:, -1], torch.full_like(out_scores[:, -1], -1.0))
    exact = converged & (~capped.any(dim=1) | (cut > last_seen.amax(dim=1)))
    return PaddedDetections(out_boxes, out_labels.long(), out_scores, counts.long(), exact)


def _suppression_matrix(boxes: torch.Tensor, iou_thr: float) -> torch.Tensor:
    """(..., M, 4) xyxy boxes in rank order -> (..., M, M) bool: [j, i] = j < i and IoU > iou_thr.

    IoU as torchvision's NMS computes it: inter / (area_j + area_i - inter), float32.
    """
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    top_left = torch.maximum(boxes[..., :, None, :2], boxes[..., None, :, :2])
    bottom_right = torch.minimum(boxes[..., :, None, 2:], boxes[..., None, :, 2:])
    inter_wh = (bottom_right - top_left).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    overlap = inter / (area[..., :, None] + area[..., None, :] - inter)
    num = boxes.shape[-2]
    earlier = torch.ones(num, num, dtype=torch.bool, device=boxes.device).triu(diagonal=1)
    return (overlap > iou_thr) & earlier


def _greedy_fixed_point(
    suppress: torch.Tensor, valid: torch.Tensor, iterations: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS from a suppression matrix (..., M, M) -> keep (..., M) bool, converged (N,) bool.

    Iterates keep[i] = valid[i] and not any(keep[j] and suppress[j, i]); the greedy result is the
    unique fixed point and is reached after at most M iterations (the exact prefix grows by at least
    one each time), usually after a handful.
    """
    suppress_f = suppress.to(torch.float32)

    def step(keep: torch.Tensor) -> torch.Tensor:
        # (..., 1, M) @ (..., M, M) -> (..., M): number of kept suppressors of each candidate
        hits = torch.matmul(keep.to(torch.float32).unsqueeze(-2), suppress_f).squeeze(-2)
        return valid & (hits == 0)

    keep = valid
    if iterations is None:
        limit = suppress.shape[-1] + 1
        done = 0
        while True:
            for _ in range(4):
                keep = step(keep)
            done += 4
            nxt = step(keep)
            if bool(torch.equal(nxt, keep)) or done >= limit:
                break
            keep = nxt
        converged = torch.ones(keep.shape[0], dtype=torch.bool, device=keep.device)
        return keep, converged
    for _ in range(max(0, iterations)):
        keep = step(keep)
    converged = (step(keep) == keep).flatten(1).all(dim=1)
    return keep, converged
