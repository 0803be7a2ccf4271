"""The MultiBox loss of SSD: prior matching, Smooth L1 localisation, hard-negative-mined cross-entropy.

Vectorised over the batch: ground truths are padded to (N, M_max) with a validity mask, so there is
no Python loop over priors or candidates (only a short one over images to pad their box lists).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ssd_train.boxes import VARIANCES, cxcywh_to_xyxy, encode, iou, xyxy_to_cxcywh

LOC_LOSSES = ("smooth_l1", "reference_l1")


class DegenerateBoxError(ValueError):
    """A ground-truth box has zero or negative width or height (log() of its size would blow up)."""


class LossParts(NamedTuple):
    """total = conf + alpha * loc; scalars. ``num_positives`` counts matched priors over the batch."""

    total: torch.Tensor
    loc: torch.Tensor
    conf: torch.Tensor
    num_positives: torch.Tensor


class MultiBoxLoss(nn.Module):
    """SSD MultiBox loss.

    Args:
        priors_cxcy: (P, 4) fractional (cx, cy, w, h) priors (``model.priors_cxcy``).
        threshold: IoU at or above which a prior is matched to its best object (0.5).
        neg_pos_ratio: hard negatives kept per positive in each image (3).
        alpha: weight of the localisation loss (1.0).
        loc_loss: "smooth_l1" (the paper: summed Smooth L1 over positives / number of positives)
            or "reference_l1" (the tutorial's plain L1 averaged over the positive coordinates).
        variances: box coding variances (0.1, 0.2).

    forward(predicted_locs (N, P, 4), predicted_scores (N, P, C), boxes, labels, image_ids=None):
        boxes: per image a (n_i, 4) tensor of fractional xyxy ground truths; labels: per image (n_i,)
        int64 class indices in 1..C-1 (0 is background). Images without objects are allowed. Pass them
        on the CPU (as the DataLoader yields them) when training on a GPU: they are padded and checked
        there and moved once, so the step needs no host synchronisation.
        Returns :class:`LossParts`.
    """

    def __init__(
        self,
        priors_cxcy: torch.Tensor,
        threshold: float = 0.5,
        neg_pos_ratio: int = 3,
        alpha: float = 1.0,
        loc_loss: str = "smooth_l1",
        variances: tuple[float, float] = VARIANCES,
    ) -> None:
        super().__init__()
        if loc_loss not in LOC_LOSSES:
            raise ValueError(f"loc_loss must be one of {LOC_LOSSES}, got {loc_loss!r}")
        self.register_buffer("priors_cxcy", priors_cxcy.detach().clone(), persistent=False)
        self.register_buffer("priors_xyxy", cxcywh_to_xyxy(self.priors_cxcy), persistent=False)
        self.threshold = threshold
        self.neg_pos_ratio = neg_pos_ratio
        self.alpha = alpha
        self.loc_loss = loc_loss
        self.variances = variances

    @torch.no_grad()
    def match(
        self, boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], image_ids: Sequence[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets per prior: (true_locs (N, P, 4) encoded offsets, true_classes (N, P) int64, 0 = background)."""
        device = self.priors_cxcy.device
        n_images = len(boxes)
        max_objects = max(1, max((len(b) for b in boxes), default=0))
        # Pad ground truths to (N, M) with a validity mask where they are (the DataLoader gives CPU
        # tensors: padding and the degenerate-box check then cost no GPU sync), then move them once.
        source = boxes[0].device if n_images else device
        gt_boxes = torch.zeros(n_images, max_objects, 4, device=source)
        gt_labels = torch.zeros(n_images, max_objects, dtype=torch.long, device=source)
        valid = torch.zeros(n_images, max_objects, dtype=torch.bool, device=source)
        for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
            if len(b):
                gt_boxes[i, : len(b)] = b.to(source, torch.float32)
                gt_labels[i, : len(b)] = lab.to(source, torch.long)
                valid[i, : len(b)] = True
        self._check_boxes(gt_boxes, valid, image_ids)
        gt_boxes = gt_boxes.to(device, non_blocking=True)
        gt_labels = gt_labels.to(device, non_blocking=True)
        valid = valid.to(device, non_blocking=True)

        overlap = iou(gt_boxes, self.priors_xyxy)  # (N, M, P)
        overlap = overlap.masked_fill(~valid[:, :, None], -1.0)
        overlap_per_prior, object_per_prior = overlap.max(dim=1)  # (N, P)
        prior_per_object = overlap.argmax(dim=2)  # (N, M)
        # Force each object's best prior to match it; if two objects share a best prior, the later wins.
        object_index = torch.arange(max_objects, device=device).expand(n_images, -1)
        forced = torch.full_like(object_per_prior, -1).scatter_reduce(
            1, prior_per_object, torch.where(valid, object_index, -1), reduce="amax", include_self=True
        )  # (N, P): forced object index or -1
        is_forced = forced >= 0
        object_per_prior = torch.where(is_forced, forced, object_per_prior)
        overlap_per_prior = torch.where(is_forced, 1.0, overlap_per_prior)

        true_classes = gt_labels.gather(1, object_per_prior)  # (N, P)
        true_classes = true_classes.masked_fill(overlap_per_prior < self.threshold, 0)
        matched_boxes = gt_boxes.gather(1, object_per_prior[..., None].expand(-1, -1, 4))  # (N, P, 4)
        true_locs = encode(xyxy_to_cxcywh(matched_boxes), self.priors_cxcy, self.variances)
        return true_locs, true_classes

    @staticmethod
    def _check_boxes(gt_boxes: torch.Tensor, valid: torch.Tensor, image_ids: Sequence[str] | None) -> None:
        bad = valid & ((gt_boxes[..., 2] <= gt_boxes[..., 0]) | (gt_boxes[..., 3] <= gt_boxes[..., 1]))
        bad = bad | (valid & ~torch.isfinite(gt_boxes).all(-1))
        if bool(bad.any()):
            image, obj = (int(v) for v in bad.nonzero()[0])
            name = image_ids[image] if image_ids is not None else f"batch index {image}"
            raise DegenerateBoxError(
                f"degenerate ground-truth box in image {name}, object {obj}: xyxy "
                f"{[round(float(v), 6) for v in gt_boxes[image, obj]]} has zero or negative width/height "
                "(or is not finite); drop or fix it in the annotations (the VOC reader drops such boxes)"
            )

    def forward(
        self,
        predicted_locs: torch.Tensor,
        predicted_scores: torch.Tensor,
        boxes: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
        image_ids: Sequence[str] | None = None,
    ) -> LossParts:
        n_images, n_priors, num_classes = predicted_scores.shape
        if predicted_locs.shape != (n_images, n_priors, 4) or n_priors != self.priors_cxcy.shape[0]:
            raise ValueError(
                f"expected locs (N, {self.priors_cxcy.shape[0]}, 4) and scores (N, {self.priors_cxcy.shape[0]}, C), "
                f"got {tuple(predicted_locs.shape)} and {tuple(predicted_scores.shape)}"
            )
        if len(boxes) != n_images or len(labels) != n_images:
            raise ValueError(f"got {len(boxes)} box lists and {len(labels)} label lists for {n_images} images")
        true_locs, true_classes = self.match(boxes, labels, image_ids)

        positive = true_classes != 0  # (N, P)
        n_positives = positive.sum(dim=1)  # (N,)
        total_positives = n_positives.sum()
        denominator = total_positives.clamp(min=1).to(predicted_scores.dtype)

        # Background priors may carry non-finite targets (an image without objects matches padding):
        # select with where(), never multiply by the mask.
        pred_locs = predicted_locs.float()
        true_locs = torch.where(positive[..., None], true_locs, pred_locs.detach())
        if self.loc_loss == "smooth_l1":
            loc = F.smooth_l1_loss(pred_locs, true_locs, reduction="none").sum(-1)  # (N, P)
            loc_loss = torch.where(positive, loc, 0.0).sum() / denominator
        else:  # the tutorial: L1 averaged over the 4 coordinates of every positive prior
            loc = (pred_locs - true_locs).abs().sum(-1)
            loc_loss = torch.where(positive, loc, 0.0).sum() / (4 * denominator)

        # (N, P, C) -> (N*P, C) for the per-prior cross-entropy, back to (N, P).
        ce = F.cross_entropy(
            predicted_scores.float().reshape(-1, num_classes), true_classes.reshape(-1), reduction="none"
        ).reshape(n_images, n_priors)
        conf_pos = (ce * positive).sum()
        # Hard negatives: per image the neg_pos_ratio * n_positives highest-CE background priors.
        ce_neg = ce.detach().masked_fill(positive, 0.0)
        order = ce_neg.argsort(dim=1, descending=True)  # (N, P)
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(n_priors, device=order.device).expand(n_images, -1)
        )
        hard_negative = (rank < (self.neg_pos_ratio * n_positives)[:, None]) & ~positive
        conf_neg = (ce * hard_negative).sum()
        conf_loss = (conf_pos + conf_neg) / denominator
        total = conf_loss + self.alpha * loc_loss
        return LossParts(total, loc_loss, conf_loss, total_positives)
