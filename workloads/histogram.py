"""A mergeable latency histogram: log-spaced buckets about 1 % wide, keyed by bucket index.

Percentiles across agents and seconds come from merging these (adding counts), never from averaging
percentiles. A bucket's value is its geometric centre, so a percentile is off by at most ~0.5 %.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

Histogram = dict[str, int]  # bucket index (as a JSON key) -> count

_SCALE = 100.0  # buckets per e-fold of latency: width e^(1/100) - 1 ≈ 1 %
_FLOOR_US = 1.0


def bucket(latency_ms: float) -> str:
    """The bucket a latency falls into."""
    microseconds = max(latency_ms * 1000.0, _FLOOR_US)
    return str(math.floor(math.log(microseconds) * _SCALE))


def value_ms(key: str) -> float:
    """The latency a bucket stands for: its geometric centre."""
    return math.exp((int(key) + 0.5) / _SCALE) / 1000.0


def record(histogram: Histogram, latency_ms: float) -> None:
    key = bucket(latency_ms)
    histogram[key] = histogram.get(key, 0) + 1


def merge(histograms: Iterable[Histogram]) -> Histogram:
    total: Counter[str] = Counter()
    for histogram in histograms:
        total.update(histogram)
    return dict(total)


def percentile(histogram: Histogram, q: float) -> float | None:
    """The q-th percentile (0–100) in ms, nearest-rank on the buckets; None for an empty histogram."""
    count = sum(histogram.values())
    if count == 0:
        return None
    rank = max(1, math.ceil(q / 100.0 * count))
    seen = 0
    for key in sorted(histogram, key=int):
        seen += histogram[key]
        if seen >= rank:
            return value_ms(key)
    return value_ms(max(histogram, key=int))
