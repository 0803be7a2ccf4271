import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ssd_runtime import boxes
from ssd_runtime.priors import make_priors


def random_xyxy(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 0.9, (n, 2))
    wh = rng.uniform(0.01, 0.5, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


def test_conversions_invert():
    rng = np.random.default_rng(0)
    xyxy = random_xyxy(rng, 100)
    np.testing.assert_allclose(boxes.cxcywh_to_xyxy(boxes.xyxy_to_cxcywh(xyxy)), xyxy, atol=1e-12)


finite = st.floats(-3, 3, allow_nan=False, width=64)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (20, 4), elements=finite), st.integers(0, 8731))
def test_encode_decode_round_trip(offsets, start):
    priors = make_priors().astype(np.float64)[start : start + 20]
    priors = np.resize(priors, (20, 4))
    decoded = boxes.decode(offsets, priors)
    np.testing.assert_allclose(boxes.encode(decoded, priors), offsets, rtol=1e-6, atol=1e-6)


def test_encode_formula():
    prior = np.array([[0.5, 0.5, 0.2, 0.4]])
    box = np.array([[0.52, 0.46, 0.4, 0.2]])
    expected = [(0.52 - 0.5) / (0.2 / 10), (0.46 - 0.5) / (0.4 / 10), 5 * np.log(2.0), 5 * np.log(0.5)]
    np.testing.assert_allclose(boxes.encode(box, prior)[0], expected, rtol=1e-12)


def test_iou_known_values():
    a = np.array([[0.0, 0.0, 2.0, 2.0]])
    b = np.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(boxes.iou(a, b), [[1 / 7, 1.0, 0.0, 0.0]])


def test_iou_properties():
    rng = np.random.default_rng(1)
    a, b = random_xyxy(rng, 30), random_xyxy(rng, 40)
    m = boxes.iou(a, b)
    assert m.shape == (30, 40)
    assert (m >= 0).all() and (m <= 1).all()
    np.testing.assert_allclose(m, boxes.iou(b, a).T)
    np.testing.assert_allclose(np.diag(boxes.iou(a, a)), 1.0)
    # Batched leading dimensions broadcast.
    assert boxes.iou(a[None].repeat(3, 0), b).shape == (3, 30, 40)


def test_iou_degenerate_boxes_give_zero():
    zero = np.zeros((1, 4))
    assert boxes.iou(zero, zero)[0, 0] == 0.0


def test_clip():
    clipped = boxes.clip(np.array([[-0.1, 0.2, 1.3, 0.9]]))
    np.testing.assert_array_equal(clipped, [[0.0, 0.2, 1.0, 0.9]])
