"""Merged-histogram percentiles against a reference computed from the raw values."""

from __future__ import annotations

import numpy as np
import pytest

from workloads import histogram


@pytest.mark.parametrize("q", [50, 90, 99, 99.9])
def test_merged_percentiles_match_the_raw_values(q: float) -> None:
    rng = np.random.default_rng(11)
    # four agents × 30 seconds, each with its own latency distribution (ms): like a real run
    raw: list[float] = []
    parts = []
    for agent in range(4):
        for _second in range(30):
            values = rng.lognormal(mean=np.log(0.4 + agent * 0.3), sigma=0.6, size=200)
            part: histogram.Histogram = {}
            for v in values:
                histogram.record(part, float(v))
            parts.append(part)
            raw.extend(values.tolist())
    merged = histogram.merge(parts)
    assert sum(merged.values()) == len(raw)
    reference = float(np.percentile(raw, q, method="inverted_cdf"))
    assert histogram.percentile(merged, q) == pytest.approx(reference, rel=0.01)


def test_averaging_percentiles_would_be_wrong() -> None:
    """Why merging matters: one slow agent dominates the true p99, not the mean of p99s."""
    fast = {}
    slow = {}
    for _ in range(990):
        histogram.record(fast, 1.0)
    for _ in range(10):
        histogram.record(slow, 100.0)
    for _ in range(990):
        histogram.record(slow, 1.0)
    merged = histogram.percentile(histogram.merge([fast, slow]), 99.9)
    averaged = (histogram.percentile(fast, 99.9) + histogram.percentile(slow, 99.9)) / 2
    assert merged == pytest.approx(100.0, rel=0.01)
    assert averaged == pytest.approx(50.5, rel=0.01)  # neither agent's nor the system's p99.9


def test_empty() -> None:
    assert histogram.percentile({}, 50) is None
