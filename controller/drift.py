"""Drift over a soak's segments: does a metric trend, step, or (memory) grow over the hours?

- **Trend**: the Mann-Kendall test on the pre-whitened series (the lag-1 autocorrelation taken out first,
  since a soak's noise comes in bursts longer than a segment), that autocorrelation estimated once Sen's slope
  is taken out (Yue's trend-free estimate), and Sen's slope of the series itself, all from `pymannkendall`. The
  slope is given per hour and in % of the first hour's level. Measured on AR(1) noise (φ = 0.5, 30 segments,
  α = 1 %): Hamed-Rao called 9 % of trend-free series trending, this 3 %; plain pre-whitening 1 %, but it
  found a 10 % fall over 30 segments in 11 % of series, this in 79 %.
- **Change points**: binary segmentation on the level, each split judged against simulated AR(1) noise with
  the series' own autocorrelation, its strength measured both against the noise within its two sides and
  against the noise about their own best splits too (so a dip that recovers is found). Written here because
  the libraries do not give this: `ruptures` gives no significance, and E-Divisive's permutation test (Otava,
  signal-processing-algorithms) treats segments as exchangeable, so bursty noise (φ = 0.5) made a third of
  trend-free series "change" (tests/test_drift.py).
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


def _split_statistics(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: its best split and that split's strength, the two sides' means apart in units of their
    standard error, the noise's sd taken about the levels of the split and of each side's own best split. That
    look-ahead keeps a second step on one side from passing for noise: without it a dip of 5 segments in 20 (a
    shaper stepped down, then reset: 42 % down, measured in the lab) was not found. Vectorised over rows, as
    the null distribution needs it for 999 simulated series."""
    rows, n = series.shape
    splits, _ = _best_split(series)
    zero = np.zeros((rows, 1))
    sums = np.hstack([zero, np.cumsum(series, axis=1)])
    squares = np.hstack([zero, np.cumsum(series**2, axis=1)])
    every = np.arange(rows)

    def ss(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # residual sum of squares of x[lo:hi] about its mean
        total = np.take_along_axis(sums, hi, 1) - np.take_along_axis(sums, lo, 1)
        sq = np.take_along_axis(squares, hi, 1) - np.take_along_axis(squares, lo, 1)
        return sq - total**2 / np.maximum(hi - lo, 1)

    j = np.broadcast_to(np.arange(n + 1), (rows, n + 1))
    at = splits[:, np.newaxis]
    start, end = np.zeros((rows, 1), dtype=int), np.full((rows, 1), n)
    left = np.where((j >= MIN_SIDE) & (j <= at - MIN_SIDE), ss(start, j) + ss(j, np.broadcast_to(at, j.shape)), np.inf)
    right = np.where(
        (j >= at + MIN_SIDE) & (j <= n - MIN_SIDE), ss(np.broadcast_to(at, j.shape), j) + ss(j, end), np.inf
    )
    best_left, best_right = left.min(axis=1), right.min(axis=1)
    levels = 2 + np.isfinite(best_left) + np.isfinite(best_right)
    within = np.where(np.isfinite(best_left), best_left, ss(start, at)[:, 0]) + np.where(
        np.isfinite(best_right), best_right, ss(at, end)[:, 0]
    )
    sd = np.sqrt(np.maximum(within, 1e-300) / np.maximum(n - levels, 1))
    mean_left = sums[every, splits] / splits
    mean_right = (sums[:, -1] - sums[every, splits]) / (n - splits)
    return splits, np.abs(mean_left - mean_right) / (sd * np.sqrt(1 / splits + 1 / (n - splits)))


def _split_p(n: int, rho: float, series: np.ndarray) -> float:
    """How often AR(1) noise with this autocorrelation, of this length and no change, gives a best split at
    least as strong as `series`' best: the p-value of a change point found by searching every split, not of one
    fixed split. Strength is judged two ways, the noise's sd within the two sides (a single step) and with the
    look-ahead (`_split_statistics`: a dip, a step and a reset), and the stronger counts, its p-value doubled
    (Bonferroni) so that looking twice does not double the false alarms."""
    rng = np.random.default_rng(n)  # the same series, the same answer
    innovations = rng.standard_normal((NULL_SERIES, n))
    innovations[:, 0] /= math.sqrt(1 - rho**2)  # the first value from the stationary distribution
    noise = scipy_signal.lfilter([1.0], [1.0, -rho], innovations, axis=1)
    p_values = []
    for strength in (_best_split, _split_statistics):
        (_,), (statistic,) = strength(series[np.newaxis, :])
        _, null = strength(noise)
        p_values.append((1 + np.count_nonzero(null >= statistic)) / (1 + NULL_SERIES))
    return min(1.0, 2 * float(min(p_values)))


def _next_splits(x: np.ndarray, a: int, at: int, b: int) -> list[int]:
    """The best split of each side of a split, where a side is long enough: the noise's autocorrelation is
    estimated about them too. Without this look-ahead a second step on one side (a shaper stepped down, then
    reset) counts as autocorrelation, and the first step as noise (measured in the lab: a 42 % dip of 5
    segments in 20, not found)."""
    found = []
    for start, end in ((a, at), (at, b)):
        if end - start >= 2 * MIN_SIDE and np.ptp(x[start:end]) > 0:
            (split,), _ = _best_split(x[np.newaxis, start:end])
            found.append(start + int(split))
    return found


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
        (split,), _ = _best_split(x[np.newaxis, a:b])
        at = a + int(split)
        rho = _rho(x, [*breaks, at, *_next_splits(x, a, at, b)])  # about the levels: a step is no autocorrelation
        if _split_p(b - a, rho, x[a:b]) < alpha:
            breaks.append(at)
            spans += [(a, at), (at, b)]
    bounds = [0, *sorted(breaks), len(x)]
    rho = _rho(x, breaks)
    found: list[ChangePoint] = []
    for before_start, at, after_end in zip(bounds, bounds[1:-1], bounds[2:], strict=False):
        before, after = x[before_start:at], x[at:after_end]
        level_before, level_after = float(np.median(before)), float(np.median(after))
        found.append(
            {
                "segment": at,
                "before": level_before,
                "after": level_after,
                "pct": 100 * (level_after / level_before - 1) if level_before else None,
                "p_value": _split_p(after_end - before_start, rho, x[before_start:after_end]),
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
