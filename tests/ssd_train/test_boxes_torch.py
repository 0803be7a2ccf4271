"""The torch box ops equal their NumPy twins on random inputs."""
import numpy as np
import pytest
import torch

import ssd_runtime.boxes as npb
import ssd_train.boxes as tb
from ssd_runtime.priors import make_priors


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 0.8, (500, 2))
    xyxy = np.concatenate([xy, xy + rng.uniform(0.01, 0.5, (500, 2))], 1).astype(np.float32)
    offsets = rng.normal(0, 1, (8732, 4)).astype(np.float32)
    return xyxy, offsets, make_priors()


def test_same_names():
    for name in ("xyxy_to_cxcywh", "cxcywh_to_xyxy", "encode", "decode", "box_area", "iou", "clip", "VARIANCES"):
        assert hasattr(tb, name) and hasattr(npb, name)


def test_numpy_torch_equal(data):
    xyxy, offsets, priors = data
    t = torch.from_numpy
    np.testing.assert_allclose(tb.xyxy_to_cxcywh(t(xyxy)).numpy(), npb.xyxy_to_cxcywh(xyxy), atol=1e-7)
    np.testing.assert_allclose(tb.cxcywh_to_xyxy(t(xyxy)).numpy(), npb.cxcywh_to_xyxy(xyxy), atol=1e-7)
    np.testing.assert_allclose(tb.decode(t(offsets), t(priors.copy())).numpy(), npb.decode(offsets, priors), rtol=1e-6, atol=1e-7)
    cxcywh = npb.xyxy_to_cxcywh(xyxy)
    p = priors[:500]
    np.testing.assert_allclose(tb.encode(t(cxcywh), t(p.copy())).numpy(), npb.encode(cxcywh, p), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tb.iou(t(xyxy[:50]), t(xyxy)).numpy(), npb.iou(xyxy[:50], xyxy), atol=1e-6)
    np.testing.assert_allclose(tb.box_area(t(xyxy)).numpy(), npb.box_area(xyxy), atol=1e-7)
    np.testing.assert_array_equal(tb.clip(t(xyxy * 1.5 - 0.2)).numpy(), npb.clip(xyxy * 1.5 - 0.2))
