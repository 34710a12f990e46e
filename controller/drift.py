"""Drift over a soak's segments: does a metric trend, step, or (memory) grow over the hours?

- **Trend**: the Mann-Kendall test on the pre-whitened series (the lag-1 autocorrelation taken out first,
  since a soak's noise comes in bursts longer than a segment), that autocorrelation estimated once Sen's slope
  is taken out (Yue's trend-free estimate), and Sen's slope of the series itself, all from `pymannkendall`. The
  slope is given per hour and in % of the first hour's level. Measured on AR(1) noise (φ = 0.5, 30 segments,
  α = 1 %): Hamed-Rao called 9 % of trend-free series trending, this 3 %; plain pre-whitening 1 %, but it
  found a 10 % fall over 30 segments in 11 % of series, this in 79 %.
- **Change points**: binary segmentation on the level, each split judged against simulated AR(1) noise with
  the series' own autocorrelation. Written here because the libraries do not give this: `ruptures` gives no
  significance, and E-Divisive's permutation test (Otava, signal-processing-algorithms) treats segments as
  exchangeable, so bursty noise (φ = 0.5) made a third of trend-free series "change" (tests/test_drift.py).
- **Growth** (process or VM memory): Sen's slope in MB/h and the end against the first hour.

Sen's slope is scipy's Theil-Sen estimator over the segments' times, so a condition that takes turns with
others (and so has gaps) gets its slope per real hour.

A series too short to test says so (`verdict: "too_short"`) rather than "no trend".
"""

from __future__ import annotations

import itertools
import math
from typing import Literal, TypedDict

import numpy as np
import pymannkendall
from scipy import signal as scipy_signal
from scipy import stats as scipy_stats

ALPHA = 0.01  # a soak tests every metric of every condition: false alarms must stay rare
MIN_SEGMENTS = 8  # fewer and Mann-Kendall's normal approximation (and a change point's sides) mean little
MIN_SIDE = 3  # segments either side of a change point
NULL_SERIES = 999  # simulated change-free series a change point's strength is ranked among


class Trend(TypedDict):
    verdict: Literal["increasing", "decreasing", "no trend", "too_short"]
    p_value: float | None
    slope_per_h: float | None  # Sen's slope, metric units per hour
    pct_per_h: float | None  # the slope in % of the first hour's level
    n: int


class ChangePoint(TypedDict):
    segment: int  # index of the first segment at the new level
    before: float  # median of the regime before
    after: float  # median of the regime after
    pct: float | None  # after against before, in %
    p_value: float  # Welch, before against after


class Growth(TypedDict):
    slope_per_h: float | None  # Sen's slope, units per hour
    first_hour: float | None  # median over the first hour (or the first quarter of a shorter soak)
    end: float | None  # median over the last such span
    ratio: float | None  # end ÷ first hour
    n: int


def _first_span(hours: np.ndarray) -> np.ndarray:
    """Which values fall in "the first hour": an hour, or the first quarter of a soak shorter than 4 h."""
    span = min(1.0, (hours[-1] - hours[0]) / 4) if len(hours) > 1 else 1.0
    return hours <= hours[0] + span


def _last_span(hours: np.ndarray) -> np.ndarray:
    return _first_span(hours[-1] - hours[::-1])[::-1]


def trend(values: list[float], hours: list[float], alpha: float = ALPHA) -> Trend:
    """The monotonic trend of one metric over its segments, each at its time in hours from the soak's start
    (a condition that takes turns with others has gaps)."""
    x, t = np.asarray(values, dtype=float), np.asarray(hours, dtype=float)
    if len(x) < MIN_SEGMENTS or np.ptp(x) == 0:
        verdict: Literal["no trend", "too_short"] = "too_short" if len(x) < MIN_SEGMENTS else "no trend"
        return {"verdict": verdict, "p_value": None, "slope_per_h": None, "pct_per_h": None, "n": len(x)}
    slope_per_h = float(scipy_stats.theilslopes(x, t).slope)  # Sen's slope, over the segments' real times
    rho = _rho(x - slope_per_h * t, [])  # the noise's autocorrelation, the trend taken out first (trend-free)
    p_value = float(pymannkendall.original_test(x[1:] - rho * x[:-1], alpha=alpha).p)  # pre-whitened
    level = float(np.median(x[_first_span(t)]))
    verdict = ("increasing" if slope_per_h > 0 else "decreasing") if p_value < alpha else "no trend"
    return {
        "verdict": verdict,
        "p_value": p_value,
        "slope_per_h": slope_per_h,
        "pct_per_h": 100 * slope_per_h / level if level else None,
        "n": len(x),
    }


def _rho(x: np.ndarray, breaks: list[int]) -> float:
    """Lag-1 autocorrelation of the noise about the levels between `breaks`, corrected for its small-sample
    bias (Kendall: about −(1 + 4ρ) / n for each level fitted on n values), kept in [0, 0.95]: negative
    autocorrelation is not corrected for."""
    bounds = [0, *sorted(breaks), len(x)]
    residuals = np.concatenate([x[a:b] - np.mean(x[a:b]) for a, b in itertools.pairwise(bounds)])
    if len(residuals) < 3 or not np.any(residuals[1:] - residuals[:-1]):
        return 0.0
    rho = float(np.corrcoef(residuals[:-1], residuals[1:])[0, 1])
    if not math.isfinite(rho):
        return 0.0
    return min(max(rho + (1 + 4 * rho) * (len(bounds) - 1) / len(residuals), 0.0), 0.95)  # a bias per level


def _best_split(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: the split (each side ≥ MIN_SIDE) whose sides' means differ most in units of their standard
    error, the sd pooled within the sides; returns (split index, statistic) per row."""
    n = series.shape[1]
    k = np.arange(MIN_SIDE, n - MIN_SIDE + 1)
    sums, squares = np.cumsum(series, axis=1), np.cumsum(series**2, axis=1)
    left, left_sq = sums[:, k - 1], squares[:, k - 1]
    right, right_sq = sums[:, -1:] - left, squares[:, -1:] - left_sq
    mean_left, mean_right = left / k, right / (n - k)
    within = (left_sq - left * mean_left) + (right_sq - right * mean_right)
    sd = np.sqrt(np.maximum(within, 1e-300) / (n - 2))
    statistic = np.abs(mean_left - mean_right) / (sd * np.sqrt(1 / k + 1 / (n - k)))
    best = np.argmax(statistic, axis=1)
    return k[best], statistic[np.arange(len(series)), best]


def _split_p(n: int, rho: float, statistic: float) -> float:
    """How often AR(1) noise with this autocorrelation, of this length and no change, gives a best split at
    least this strong: the p-value of a change point found by searching every split, not of one fixed split."""
    rng = np.random.default_rng(n)  # the same series, the same answer
    innovations = rng.standard_normal((NULL_SERIES, n))
    innovations[:, 0] /= math.sqrt(1 - rho**2)  # the first value from the stationary distribution
    noise = scipy_signal.lfilter([1.0], [1.0, -rho], innovations, axis=1)
    _, null = _best_split(noise)
    return float((1 + np.count_nonzero(null >= statistic)) / (1 + NULL_SERIES))


def change_points(values: list[float], alpha: float = ALPHA) -> list[ChangePoint]:
    """Level shifts in one metric's segments, by binary segmentation: the best split of a span is kept when
    AR(1) noise with the series' own autocorrelation would rarely (p < α) give one as strong, then each side
    is searched again."""
    x = np.asarray(values, dtype=float)
    breaks: list[int] = []
    spans = [(0, len(x))]
    while spans:
        a, b = spans.pop()
        if b - a < 2 * MIN_SIDE or np.ptp(x[a:b]) == 0:
            continue
        (split,), (statistic,) = _best_split(x[np.newaxis, a:b])
        rho = _rho(x, [*breaks, a + int(split)])  # about the levels with this split: a step is no autocorrelation
        if _split_p(b - a, rho, float(statistic)) < alpha:
            breaks.append(a + int(split))
            spans += [(a, a + int(split)), (a + int(split), b)]
    bounds = [0, *sorted(breaks), len(x)]
    rho = _rho(x, breaks)
    found: list[ChangePoint] = []
    for before_start, at, after_end in zip(bounds, bounds[1:-1], bounds[2:], strict=False):
        before, after = x[before_start:at], x[at:after_end]
        (_,), (statistic,) = _best_split(np.concatenate([before, after])[np.newaxis, :])
        level_before, level_after = float(np.median(before)), float(np.median(after))
        found.append(
            {
                "segment": at,
                "before": level_before,
                "after": level_after,
                "pct": 100 * (level_after / level_before - 1) if level_before else None,
                "p_value": _split_p(after_end - before_start, rho, float(statistic)),
            }
        )
    return found


def growth(values: list[float], hours: list[float]) -> Growth:
    """How a memory series grew: Sen's slope per hour, and its end against its first hour."""
    x, t = np.asarray(values, dtype=float), np.asarray(hours, dtype=float)
    if len(x) < 2:
        return {"slope_per_h": None, "first_hour": None, "end": None, "ratio": None, "n": len(x)}
    first, end = float(np.median(x[_first_span(t)])), float(np.median(x[_last_span(t)]))
    slope = float(scipy_stats.theilslopes(x, t).slope)
    return {
        "slope_per_h": slope,
        "first_hour": first,
        "end": end,
        "ratio": end / first if first else None,
        "n": len(x),
    }
