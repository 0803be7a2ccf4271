import numpy as np
import pytest

from ssd_runtime.boxes import cxcywh_to_xyxy
from ssd_runtime.priors import PRIOR_PRESETS, PriorConfig, make_priors, priors_sha256

#: sha256 of the reference priors' float32 bytes; changing it changes every artifact's identity.
REFERENCE_PRIORS_SHA256 = "91a080f95f8b4aea2118848a475798812b6f610db1f2aadca2e7696c77c2437a"


def test_count_and_layout():
    priors = make_priors()
    assert priors.shape == (8732, 4) and priors.dtype == np.float32
    config = PriorConfig()
    assert config.boxes_per_location == (4, 6, 6, 6, 4, 4)
    assert config.num_priors == 8732
    sizes = [s * s * a for s, a in zip(config.feature_map_sizes, config.boxes_per_location)]
    assert sizes == [5776, 2166, 600, 150, 36, 4]


@pytest.mark.parametrize(
    "index, expected",
    [
        (0, (0.013158, 0.013158, 0.1, 0.1)),
        (1, (0.013158, 0.013158, 0.141421, 0.141421)),
        (5776, (0.026316, 0.026316, 0.2, 0.2)),
        (8728, (0.5, 0.5, 0.9, 0.9)),
        (8729, (0.5, 0.5, 1.0, 1.0)),
        (8730, (0.5, 0.5, 1.0, 0.636396)),
    ],
)
def test_golden_values(index, expected):
    np.testing.assert_allclose(make_priors()[index], expected, atol=1e-6)


def test_per_location_order_and_reference_ratio():
    priors = make_priors()
    # Map 2 (conv7, 19x19, scale 0.2): [1, extra, 2, 3, 0.5, .333] at its first location.
    first = priors[5776:5782]
    s, extra = 0.2, np.sqrt(0.2 * 0.375)
    np.testing.assert_allclose(first[:, 2], [s, extra, s * np.sqrt(2), s * np.sqrt(3), s * np.sqrt(0.5), s * np.sqrt(0.333)], rtol=1e-6)
    # Row-major: the second location moves along x (column j), y stays.
    assert priors[4, 0] > priors[0, 0] and priors[4, 1] == priors[0, 1]


def test_coco_preset_is_the_original_ssd300_coco_geometry():
    # Caffe ssd_coco.py at 300 px: min sizes 21, 45, 99, 153, 207, 261; max sizes 45, ..., 315.
    config = PriorConfig(**PRIOR_PRESETS["coco"])
    priors = make_priors(config)
    assert priors.shape == (8732, 4) and config.num_priors == 8732
    mins, maxs = [21, 45, 99, 153, 207, 261], [45, 99, 153, 207, 261, 315]
    starts = np.cumsum([0] + [s * s * a for s, a in zip(config.feature_map_sizes, config.boxes_per_location)])[:-1]
    for k, start in enumerate(starts):
        centre = (config.feature_map_sizes[k] - 1) // 2  # a central location: nothing clamped
        first = start + (centre * config.feature_map_sizes[k] + centre) * config.boxes_per_location[k]
        np.testing.assert_allclose(priors[first, 2:] * 300, [mins[k], mins[k]], rtol=1e-5)
        extra = min(np.sqrt(mins[k] * maxs[k]) / 300, 1.0)  # the reference clamp caps w, h at 1
        np.testing.assert_allclose(priors[first + 1, 2:], [extra, extra], rtol=1e-5)
    assert PriorConfig(**PRIOR_PRESETS["reference"]) == PriorConfig()
    assert priors_sha256(priors) != REFERENCE_PRIORS_SHA256


def test_hash_pinned():
    assert priors_sha256(make_priors()) == REFERENCE_PRIORS_SHA256


def test_reference_clamp_leaves_priors_past_the_edge():
    reference = make_priors()
    unclipped = make_priors(PriorConfig(clip="none"))
    assert (reference != unclipped).any(axis=1).sum() == 20  # only w/h > 1 are capped
    corners = cxcywh_to_xyxy(reference)
    assert ((corners < 0) | (corners > 1)).any(axis=1).sum() == 2740


def test_extent_clipping_keeps_priors_inside_the_image():
    clipped = make_priors(PriorConfig(clip="extent"))
    corners = cxcywh_to_xyxy(clipped)
    assert corners.min() >= -1e-6 and corners.max() <= 1 + 1e-6
    assert priors_sha256(clipped) != REFERENCE_PRIORS_SHA256
    assert clipped.shape == (8732, 4)


def test_cached_and_read_only():
    a, b = make_priors(PriorConfig()), make_priors(PriorConfig())
    assert a is b
    with pytest.raises(ValueError):
        a[0, 0] = 1.0


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="one entry per map"):
        PriorConfig(scales=(0.1,))
    with pytest.raises(ValueError, match="clip"):
        PriorConfig(clip="sometimes")
    config = PriorConfig(clip="extent")
    assert PriorConfig.from_dict(config.to_dict()) == config
