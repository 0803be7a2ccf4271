"""Torch postprocess (reference and padded device variant): identical detections to NumPy."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from tests.helpers.synthetic_outputs import synthetic_outputs  # noqa: E402
from ssd_runtime.compare import compare_detections  # noqa: E402
from ssd_runtime.postprocess import postprocess  # noqa: E402
from ssd_runtime.priors import make_priors  # noqa: E402
from ssd_runtime.postprocess_torch import postprocess_torch, postprocess_torch_padded  # noqa: E402
from ssd_runtime.spec import PostprocessSettings  # noqa: E402

from tests.helpers.postprocess_cases import SETTINGS, hand_problem, random_problem  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def to_t(*arrays, device="cpu"):
    return [torch.from_numpy(np.array(a)).to(device) for a in arrays]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("peaky", [False, True])
def test_reference_identical_to_numpy(settings, seed, peaky):
    locs, logits, priors = random_problem(seed, num_images=3, num_priors=500, num_classes=5, peaky=peaky)
    expected = postprocess(locs, logits, priors, settings)
    got = postprocess_torch(*to_t(locs, logits), priors, settings)
    report = compare_detections(got, expected, settings)
    assert report.identical, report.mismatches
    # torch's softmax may round differently from NumPy's: only threshold-edge cases may differ
    # (min_score 0.0 admits scores within 1e-6 of it: rare)
    assert report.edge_differences <= 2


@pytest.mark.parametrize("settings", SETTINGS[:3])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("peaky", [False, True])
@pytest.mark.parametrize("iterations", [None, 64])
def test_padded_identical_to_numpy(settings, seed, peaky, iterations):
    locs, logits, priors = random_problem(seed, num_images=3, num_priors=400, num_classes=4, peaky=peaky)
    expected = postprocess(locs, logits, priors, settings)
    padded = postprocess_torch_padded(
        *to_t(locs, logits), torch.from_numpy(priors), settings, max_candidates=400, nms_iterations=iterations
    )
    assert padded.boxes.shape == (3, settings.top_k, 4) and padded.labels.dtype == torch.int64
    assert bool(padded.exact.all())
    report = compare_detections(padded.to_list(), expected, settings)
    assert report.identical, report.mismatches


def test_padded_cap_reports_inexact_or_stays_identical():
    locs, logits, priors = random_problem(3, num_images=2, num_priors=400, num_classes=3)
    settings = PostprocessSettings(0.01, 0.45, 200)
    expected = postprocess(locs, logits, priors, settings)
    padded = postprocess_torch_padded(*to_t(locs, logits), priors, settings, max_candidates=20)
    got = padded.to_list()
    for n in range(2):
        if bool(padded.exact[n]):
            assert compare_detections([got[n]], [expected[n]], settings).identical
    assert not bool(padded.exact.all())  # 20 candidates per class cannot cover this problem
    # a cap the output never reaches is exact: top_k 5 with 50 candidates per class
    small = PostprocessSettings(0.01, 0.45, 5)
    padded = postprocess_torch_padded(*to_t(locs, logits), priors, small, max_candidates=50)
    assert bool(padded.exact.all())
    assert compare_detections(padded.to_list(), postprocess(locs, logits, priors, small), small).identical


def test_empty_results():
    locs, logits, priors = random_problem(0)
    logits[..., 0] = 50.0
    s = PostprocessSettings(0.2, 0.5, 200)
    for d in postprocess_torch(*to_t(locs, logits), priors, s):
        assert d.boxes.shape == (0, 4) and d.labels.shape == (0,) and d.scores.shape == (0,)
    padded = postprocess_torch_padded(*to_t(locs, logits), priors, s, nms_iterations=4)
    assert padded.counts.tolist() == [0, 0]
    for d in padded.to_list():
        assert d.boxes.shape == (0, 4) and d.labels.dtype == np.int64


def test_hand_worked_torch():
    locs, logits, priors = hand_problem()
    s = PostprocessSettings(0.15, 0.5, 200)
    (d,) = postprocess_torch(*to_t(locs, logits), priors, s)
    np.testing.assert_array_equal(d.labels, [1, 2, 1])
    (p,) = postprocess_torch_padded(*to_t(locs, logits), priors, s, nms_iterations=2).to_list()
    np.testing.assert_array_equal(p.labels, [1, 2, 1])


def test_padded_fewer_slots_than_top_k():
    locs, logits, priors = hand_problem()
    s = PostprocessSettings(0.05, 0.5, 200)  # 2 classes x 3 candidates < top_k
    padded = postprocess_torch_padded(*to_t(locs, logits), priors, s)
    assert padded.scores.shape == (1, 200)
    assert compare_detections(padded.to_list(), postprocess(locs, logits, priors, s), s).identical


@pytest.mark.parametrize("settings", [PostprocessSettings(0.01, 0.45, 200), PostprocessSettings(0.2, 0.5, 200)])
def test_trained_looking_outputs_identical(settings):
    """Real SSD300 priors and outputs shaped like a trained model's (about 400 candidates per class)."""
    priors = make_priors()
    locs, logits = synthetic_outputs(priors, 2, seed=3)
    expected = postprocess(locs, logits, priors, settings)
    report = compare_detections(postprocess_torch(*to_t(locs, logits), priors, settings), expected, settings)
    assert report.identical, report.mismatches
    assert sum(len(d) for d in expected) > 50


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("settings", [PostprocessSettings(0.01, 0.45, 200), PostprocessSettings(0.2, 0.5, 200)])
def test_cuda_identical_to_numpy(settings):
    priors = make_priors()
    locs, logits = synthetic_outputs(priors, 4, seed=1)
    expected = postprocess(locs, logits, priors, settings)
    locs_d, logits_d = to_t(locs, logits, device="cuda")
    ref = postprocess_torch(locs_d, logits_d, priors, settings)
    report = compare_detections(ref, expected, settings)
    assert report.identical, report.mismatches
    padded = postprocess_torch_padded(
        locs_d, logits_d, torch.from_numpy(np.array(priors)).cuda(), settings, nms_iterations=32
    )
    assert padded.boxes.device.type == "cuda"
    report = compare_detections(padded.to_list(), expected, settings)
    assert report.identical, report.mismatches
