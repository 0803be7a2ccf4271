"""Stream statistics (ssd_runtime/video/stats.py): the fixed-size histograms' percentiles equal
numpy's nearest-rank percentiles within the 0.5 % their 1 %-wide bins promise, with fixed memory."""
from __future__ import annotations

import numpy as np
import pytest

from ssd_runtime.video.stats import PERCENTILES, STAGES, Histogram, StreamStats


@pytest.mark.parametrize("seed", range(4))
def test_histogram_percentiles_equal_numpy_within_half_a_percent(seed):
    rng = np.random.default_rng(seed)
    # durations from 10 microseconds to minutes: log-normal around 20 ms, a tail of slow outliers
    samples = np.concatenate([rng.lognormal(np.log(0.02), 1.0, 5000), rng.uniform(1.0, 100.0, 50),
                              rng.uniform(1e-5, 1e-4, 50)])
    histogram = Histogram()
    for value in rng.permutation(samples):
        histogram.add(float(value))

    assert histogram.count == len(samples)
    assert histogram.total == pytest.approx(samples.sum())
    for q in (*PERCENTILES, 1, 10, 75, 99.9, 100):
        want = np.percentile(samples, q, method="inverted_cdf")  # the nearest rank, as the histogram reads it
        assert histogram.percentile(q) == pytest.approx(want, rel=0.005), q
    summary = histogram.summary_ms()
    assert summary["p50_ms"] == pytest.approx(1e3 * np.percentile(samples, 50, method="inverted_cdf"), rel=0.005)
    assert summary["mean_ms"] == pytest.approx(1e3 * samples.mean(), rel=1e-3)


def test_histogram_memory_does_not_grow_with_its_samples():
    histogram = Histogram()
    size = histogram.counts.nbytes
    for value in np.random.default_rng(0).lognormal(np.log(0.02), 2.0, 20000):
        histogram.add(float(value))
    histogram.add(1e9)  # beyond the last bin: counted in it
    histogram.add(0.0)  # below the first
    assert histogram.counts.nbytes == size and histogram.count == 20002


def test_an_empty_histogram_reports_none():
    assert Histogram().percentile(50) is None
    assert Histogram().summary_ms() == {"count": 0, "mean_ms": None, "p50_ms": None, "p90_ms": None, "p99_ms": None}


def test_stream_stats_report_counts_stages_and_latency():
    stats = StreamStats()
    for name, n in (("frames_in", 10), ("skipped", 3), ("dropped", 2), ("processed", 5)):
        stats.count(name, n)
    for stage in STAGES:
        stats.stages[stage].add(0.01)
    stats.latency.add(0.05)
    stats.ended = stats.started + 2.0  # a run of 2 s
    report = stats.report()
    assert {k: report[k] for k in ("frames_in", "skipped", "dropped", "processed")} == {
        "frames_in": 10, "skipped": 3, "dropped": 2, "processed": 5}
    assert set(report["stages"]) == set(STAGES)
    assert report["stages"]["infer"]["p50_ms"] == pytest.approx(10, rel=0.005)
    assert report["latency"]["p99_ms"] == pytest.approx(50, rel=0.005)
    assert (report["seconds"], report["throughput_fps"]) == (2.0, 2.5)
