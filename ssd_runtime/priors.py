"""SSD300 prior (default) boxes: a pure function of a frozen configuration, in NumPy."""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ssd_runtime.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

CLIP_MODES = ("reference", "extent", "none")


@dataclass(frozen=True)
class PriorConfig:
    """Geometry of the prior boxes.

    feature_map_sizes: side of each square prediction map, in map order (conv4_3 first).
    scales: prior scale of each map, as a fraction of the image side.
    aspect_ratios: per map, the ratios w/h; the extra square prior of scale sqrt(s_k * s_k+1)
        (``last_extra_scale`` for the last map) follows ratio 1 immediately.
    clip: "reference" clamps (cx, cy, w, h) to [0, 1] as the tutorial does (bit-compatible default);
        "extent" clips each prior's corners to the image (true clipping); "none" leaves them.
    """

    feature_map_sizes: tuple[int, ...] = (38, 19, 10, 5, 3, 1)
    scales: tuple[float, ...] = (0.1, 0.2, 0.375, 0.55, 0.725, 0.9)
    aspect_ratios: tuple[tuple[float, ...], ...] = (
        (1.0, 2.0, 0.5),
        (1.0, 2.0, 3.0, 0.5, 0.333),
        (1.0, 2.0, 3.0, 0.5, 0.333),
        (1.0, 2.0, 3.0, 0.5, 0.333),
        (1.0, 2.0, 0.5),
        (1.0, 2.0, 0.5),
    )
    last_extra_scale: float = 1.0
    clip: str = "reference"

    def __post_init__(self) -> None:
        n = len(self.feature_map_sizes)
        if len(self.scales) != n or len(self.aspect_ratios) != n:
            raise ValueError(
                f"PriorConfig: feature_map_sizes, scales and aspect_ratios need one entry per map "
                f"(got {n}, {len(self.scales)}, {len(self.aspect_ratios)})"
            )
        if self.clip not in CLIP_MODES:
            raise ValueError(f"PriorConfig.clip must be one of {CLIP_MODES}, got {self.clip!r}")
        for ratios in self.aspect_ratios:
            if 1.0 not in ratios:
                raise ValueError(f"PriorConfig: every map needs aspect ratio 1 (got {ratios})")

    @property
    def boxes_per_location(self) -> tuple[int, ...]:
        """Priors per feature-map cell: one per aspect ratio plus the extra square one."""
        return tuple(len(r) + 1 for r in self.aspect_ratios)

    @property
    def num_priors(self) -> int:
        return sum(s * s * a for s, a in zip(self.feature_map_sizes, self.boxes_per_location))

    def to_dict(self) -> dict:
        return {
            "feature_map_sizes": list(self.feature_map_sizes),
            "scales": list(self.scales),
            "aspect_ratios": [list(r) for r in self.aspect_ratios],
            "last_extra_scale": self.last_extra_scale,
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, data: dict) -> PriorConfig:
        return cls(
            feature_map_sizes=tuple(int(s) for s in data["feature_map_sizes"]),
            scales=tuple(float(s) for s in data["scales"]),
            aspect_ratios=tuple(tuple(float(r) for r in rs) for rs in data["aspect_ratios"]),
            last_extra_scale=float(data["last_extra_scale"]),
            clip=str(data["clip"]),
        )


#: Named prior geometries (``PriorConfig(**PRIOR_PRESETS[name])``). "reference": the paper's SSD300 for
#: VOC; "coco": the original SSD300's COCO geometry (Caffe ``ssd_coco.py``: min sizes 21, 45, 99, 153,
#: 207, 261 px and max 315 px at 300 px), smaller priors for data with many small objects.
PRIOR_PRESETS: dict[str, dict] = {
    "reference": {},
    # the last map's extra prior is sqrt(261 * 315) px, as Caffe's min/max-size rule gives
    "coco": {"scales": (0.07, 0.15, 0.33, 0.51, 0.69, 0.87), "last_extra_scale": math.sqrt(0.87 * 1.05)},
}


@functools.lru_cache(maxsize=8)
def _priors_cached(config: PriorConfig) -> np.ndarray:
    per_map = []
    for k, (size, scale, ratios) in enumerate(
        zip(config.feature_map_sizes, config.scales, config.aspect_ratios)
    ):
        if k + 1 < len(config.scales):
            extra = math.sqrt(scale * config.scales[k + 1])
        else:
            extra = config.last_extra_scale
        # Per-location (w, h) in the reference order: ratio 1, the extra square, then the others.
        wh = []
        for r in ratios:
            wh.append((scale * math.sqrt(r), scale / math.sqrt(r)))
            if r == 1.0:
                wh.append((extra, extra))
        wh_arr = np.asarray(wh, dtype=np.float64)  # (A, 2)
        centres = (np.arange(size, dtype=np.float64) + 0.5) / size
        cy, cx = np.meshgrid(centres, centres, indexing="ij")  # row i, column j
        num_boxes = len(wh)
        boxes = np.empty((size, size, num_boxes, 4), dtype=np.float64)
        boxes[..., 0] = cx[:, :, None]
        boxes[..., 1] = cy[:, :, None]
        boxes[..., 2:] = wh_arr[None, None]
        per_map.append(boxes.reshape(-1, 4))  # (H, W, A, 4) -> (H*W*A, 4)
    priors = np.concatenate(per_map).astype(np.float32)
    if config.clip == "reference":
        priors = np.clip(priors, 0.0, 1.0)
    elif config.clip == "extent":
        priors = xyxy_to_cxcywh(np.clip(cxcywh_to_xyxy(priors), 0.0, 1.0)).astype(np.float32)
    priors.setflags(write=False)
    return priors


def make_priors(config: PriorConfig | None = None) -> np.ndarray:
    """Prior boxes, float32 (num_priors, 4) in fractional (cx, cy, w, h), read-only.

    Order: map k, row i, column j, then per location [1, extra, other ratios...] as in the reference.
    Cached by value of the (frozen) config.
    """
    return _priors_cached(config or PriorConfig())


def priors_sha256(priors: np.ndarray) -> str:
    """sha256 hex digest of the priors' float32 little-endian bytes: the identity of a geometry."""
    data = np.ascontiguousarray(priors, dtype="<f4")
    return hashlib.sha256(data.tobytes()).hexdigest()
