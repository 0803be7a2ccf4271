"""Paired bootstrap over images: the fast resampled AP equals map_of_detections on the literally resampled set,
to the bit."""
from __future__ import annotations

import numpy as np
import pytest

from ssd_runtime.bootstrap import (
    BootstrapError,
    BootstrapSettings,
    MatchesFileError,
    interval_wider_than_target,
    load_matches,
    paired_bootstrap,
    resample_weights,
    resampled_aps,
    resampled_maps,
    save_matches,
)
from ssd_runtime.metric import GroundTruth, map_of_detections
from ssd_runtime.postprocess import Detections
from tests.helpers.metric_cases import NAMES, dets, random_set


def literal_resample(detections, ground_truths, drawn):
    """The resampled set itself: image i once per draw, in index order (each copy its own image, as with
    renamed ids), detections and ground truth copied."""
    order = np.sort(drawn)
    return ([Detections(detections[i].boxes.copy(), detections[i].labels.copy(), detections[i].scores.copy())
             for i in order],
            [GroundTruth.create(ground_truths[i].boxes, ground_truths[i].labels, ground_truths[i].difficult)
             for i in order])


def drawn_images(weights_row):
    return np.repeat(np.arange(weights_row.size), weights_row)


@pytest.mark.parametrize("method", ["11point", "allpoint"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_resample_equals_voc_map_on_the_literal_resampled_set(method, seed):
    # coarse scores (0.01 steps): plenty of ties across and inside images, the case the tie runs handle
    rng = np.random.default_rng(seed)
    d, g = random_set(rng, 40, len(NAMES))
    matches = map_of_detections(d, g, NAMES, ap_method=method).matches
    weights = resample_weights(len(d), BootstrapSettings(resamples=25, seed=seed))
    aps = resampled_aps(matches, weights)
    maps = resampled_maps(aps)
    assert np.all(weights.sum(axis=1) == len(d))
    for r in range(weights.shape[0]):
        expected = map_of_detections(*literal_resample(d, g, drawn_images(weights[r])), NAMES, ap_method=method)
        # exact: the same integer counts through the same float operations
        np.testing.assert_array_equal(aps[r], [c.ap for c in expected.classes])
        assert maps[r] == expected.map or (np.isnan(maps[r]) and np.isnan(expected.map))


def test_ties_inside_one_image_rank_copies_as_blocks():
    # one image with a TP and an FP of class a at the same score, drawn twice: ranked TP FP TP FP (a1 b1 a2 b2);
    # repeating each detection (TP TP FP FP) would give a higher 11-point AP
    d = [dets([[0, 0, 1, 1], [5, 5, 6, 6]], [1, 1], [0.5, 0.5]), dets([[0, 0, 1, 1]], [1], [0.5])]
    g = [GroundTruth.create([[0, 0, 1, 1]], [1]), GroundTruth.create([[3, 3, 4, 4]], [1])]
    matches = map_of_detections(d, g, NAMES).matches
    weights = np.array([[2, 0], [2, 1], [1, 1]])
    aps = resampled_aps(matches, weights)
    for r in range(3):
        expected = map_of_detections(*literal_resample(d, g, drawn_images(weights[r])), NAMES)
        np.testing.assert_array_equal(aps[r], [c.ap for c in expected.classes])
    # by hand: precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1 -> 6 thresholds at 1, 5 at 2/3 (TP TP FP FP: 1.0)
    assert aps[0, 0] == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-12)


def test_all_ones_weights_give_the_full_set():
    d, g = random_set(np.random.default_rng(5), 30, len(NAMES))
    result = map_of_detections(d, g, NAMES)
    aps = resampled_aps(result.matches, np.ones((1, len(d)), dtype=np.int64))
    np.testing.assert_array_equal(aps[0], [c.ap for c in result.classes])
    assert resampled_maps(aps)[0] == result.map


def test_paired_bootstrap_is_deterministic_and_pairs_the_resamples():
    d, g = random_set(np.random.default_rng(3), 60, len(NAMES))
    reference = map_of_detections(d, g, NAMES).matches
    # the same detections: every paired difference is 0, whatever the resample
    same = paired_bootstrap(reference, reference, BootstrapSettings(resamples=50))
    assert same.map == (0.0, 0.0)
    assert all(v == (0.0, 0.0) for v in same.classes.values() if v is not None)
    # a model whose boxes miss every object in every other image: a clear loss, its interval below 0 around it
    worse = [dets(x.boxes + 2.0 * (i % 2 == 0), x.labels, x.scores) for i, x in enumerate(d)]
    model = map_of_detections(worse, g, NAMES)
    delta = (model.map - map_of_detections(d, g, NAMES).map) * 100
    settings = BootstrapSettings(resamples=200, seed=7)
    first = paired_bootstrap(model.matches, reference, settings)
    assert first == paired_bootstrap(model.matches, reference, settings)  # same seed, same intervals
    assert first.map[0] < delta < first.map[1]
    assert first.map[1] < 0
    other = paired_bootstrap(model.matches, reference, BootstrapSettings(resamples=200, seed=8))
    assert other.map != first.map
    narrow = paired_bootstrap(model.matches, reference, BootstrapSettings(resamples=200, seed=7, level=0.5))
    assert first.map[0] < narrow.map[0] <= narrow.map[1] < first.map[1]
    assert set(first.classes) == set(NAMES[1:])


def test_unpaired_results_and_bad_settings_are_refused():
    d, g = random_set(np.random.default_rng(4), 20, len(NAMES))
    matches = map_of_detections(d, g, NAMES).matches
    with pytest.raises(BootstrapError, match="other images"):
        paired_bootstrap(map_of_detections(d[:-1], g[:-1], NAMES).matches, matches)
    with pytest.raises(BootstrapError, match="other AP rules"):
        paired_bootstrap(map_of_detections(d, g, NAMES, ap_method="allpoint").matches, matches)
    for bad in ({"resamples": 1}, {"level": 1.0}, {"level": 0}, {"seed": -1}, {"resamples": 10.5}):
        with pytest.raises(BootstrapError):
            BootstrapSettings(**bad)
    with pytest.raises(BootstrapError, match="weights must be"):
        resampled_aps(matches, np.ones((2, 3), dtype=np.int64))


def test_wider_than_target_compares_with_the_band():
    assert interval_wider_than_target((-0.06, 0.05), 0.05) is True  # width 0.11 > band 0.10
    assert interval_wider_than_target((-0.2, -0.11), 0.05) is False  # width 0.09: fits the band's width
    assert interval_wider_than_target(None, 0.05) is None


def test_matches_file_round_trip(tmp_path):
    d, g = random_set(np.random.default_rng(6), 30, len(NAMES))
    matches = map_of_detections(d, g, NAMES, ap_method="allpoint").matches
    save_matches(tmp_path / "m.npz", matches, "ab" * 32)
    loaded, image_list = load_matches(tmp_path / "m.npz")
    assert image_list == "ab" * 32
    weights = resample_weights(30, BootstrapSettings(resamples=20))
    np.testing.assert_array_equal(resampled_aps(loaded, weights), resampled_aps(matches, weights))
    assert (loaded.class_names, loaded.ap_method, loaded.num_images) == (NAMES, "allpoint", 30)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(MatchesFileError, match="not a matches file"):
        load_matches(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", format=np.array("something"))
    with pytest.raises(MatchesFileError, match=r"other.npz: expected a 'ssd300-matches' file of schema_version 1, "
                       r"found format 'something' schema_version None; rerun the evaluation"):
        load_matches(tmp_path / "other.npz")
