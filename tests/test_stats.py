"""Statistics against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from controller import stats


def test_describe_matches_a_t_interval() -> None:
    values = [10.0, 12.0, 11.0, 13.0]
    described = stats.describe(values)
    low, high = scipy_stats.t.interval(0.95, 3, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert described["mean"] == pytest.approx(11.5)
    assert described["ci95"] == pytest.approx([low, high])
    assert described["n"] == 4


def test_one_value_has_no_interval() -> None:
    assert stats.describe([3.0]) == {"mean": 3.0, "sd": None, "ci95": None, "n": 1, "values": [3.0]}


def test_overhead_of_a_clear_drop() -> None:
    result = stats.overhead([30.0, 31.0, 29.0, 30.5], [20.0, 21.0, 19.5, 20.5])
    assert result["pct"] == pytest.approx(100 * (20.25 - 30.125) / 30.125)
    low, high = result["ci95_pct"]
    assert low < result["pct"] < high < 0
    assert result["significant"] and result["p_value"] < 0.001


def test_ratio_ci_covers_the_true_ratio_about_95_percent_of_the_time() -> None:
    """Coverage by simulation: 2,000 experiments of n = 5 with a true −20 % change and 5 % noise."""
    rng = np.random.default_rng(7)
    hits = 0
    runs = 2000
    for _ in range(runs):
        base = rng.normal(100.0, 5.0, 5)
        cond = rng.normal(80.0, 4.0, 5)
        low, high = stats.overhead(base.tolist(), cond.tolist())["ci95_pct"]
        hits += low <= -20.0 <= high
    assert 0.92 <= hits / runs <= 0.98


def test_no_difference_is_not_significant() -> None:
    result = stats.overhead([5.0, 5.0, 5.0], [5.0, 5.0, 5.0])
    assert result["pct"] == 0.0 and result["p_value"] == 1.0 and not result["significant"]


def test_zero_baseline_has_no_percentage() -> None:
    result = stats.overhead([0.0, 0.0], [3.0, 5.0])
    assert result["delta"] == 4.0
    assert result["pct"] is None and result["ci95_pct"] is None
    assert result["p_value"] is not None and not math.isnan(result["p_value"])
