"""Statistics over repetitions: means with t-intervals, and overheads against the baseline.

Each trial contributes one value per metric (its steady-phase KPI), so n is the number of repetitions.
The overhead's CI and its p-value come from one model: the log of the ratio of means (delta method,
Welch–Satterthwaite degrees of freedom), which keeps the interval asymmetric as a ratio should be, or the plain
difference of means where a mean is not positive. So a change is significant exactly when its CI excludes 0.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

ALPHA = 0.05


class Description(TypedDict):
    """One condition's values of one metric, summarised."""

    mean: float | None
    sd: float | None
    ci95: list[float] | None  # [low, high]; None when n < 2
    n: int
    values: list[float]


class Overhead(TypedDict):
    """A condition against the baseline."""

    delta: float | None
    pct: float | None
    ci95_pct: list[float] | None
    p_value: float | None
    significant: bool


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _t_quantile(df: float) -> float:
    """Two-sided 95 % quantile of Student's t."""
    from scipy import stats  # half a second to import: only commands that analyse pay for it

    return float(stats.t.ppf(1 - ALPHA / 2, df))


def _t_survival(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    from scipy import stats  # half a second to import: only commands that analyse pay for it

    return float(stats.t.sf(t, df))


def describe(values: list[float]) -> Description:
    """mean, sd, ci95 [low, high] (None when n < 2), n and the values themselves."""
    arr = np.asarray(values, dtype=float)
    n = int(arr.size)
    if n == 0:
        return {"mean": None, "sd": None, "ci95": None, "n": 0, "values": []}
    mean = float(arr.mean())
    if n < 2:
        return {"mean": mean, "sd": None, "ci95": None, "n": n, "values": arr.tolist()}
    sd = float(arr.std(ddof=1))
    half = _t_quantile(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "n": n, "values": arr.tolist()}


def overhead(baseline: list[float], condition: list[float]) -> Overhead:
    """delta, pct, ci95_pct [low, high], p_value and significant of `condition` against `baseline`.

    The interval and the p-value come from one model on one scale, so that `significant` (p < 0.05) holds
    exactly when the interval excludes no change: the log of the ratio of means where both means are positive
    (a ratio's interval is asymmetric, as it should be), else the difference of means; Welch's standard error
    and degrees of freedom either way.
    """
    base, cond = np.asarray(baseline, dtype=float), np.asarray(condition, dtype=float)
    result: Overhead = {"delta": None, "pct": None, "ci95_pct": None, "p_value": None, "significant": False}
    if base.size == 0 or cond.size == 0:
        return result
    m0, m1 = float(base.mean()), float(cond.mean())
    result["delta"] = m1 - m0
    result["pct"] = _clean(100.0 * (m1 - m0) / abs(m0)) if m0 else None
    if base.size < 2 or cond.size < 2:
        return result
    v0, v1 = float(base.var(ddof=1)), float(cond.var(ddof=1))
    log_scale = m0 > 0 and m1 > 0
    if log_scale:  # delta method: var(log mean) ≈ var / (n · mean²)
        a, b, centre = v1 / (cond.size * m1**2), v0 / (base.size * m0**2), math.log(m1 / m0)
    else:
        a, b, centre = v1 / cond.size, v0 / base.size, m1 - m0
    se = math.sqrt(a + b)
    if se == 0:  # no spread at all: the difference is exact
        result["p_value"] = 1.0 if centre == 0 else 0.0
        bounds = (centre, centre)
    else:
        df = (a + b) ** 2 / ((a**2 / (cond.size - 1) if a else 0.0) + (b**2 / (base.size - 1) if b else 0.0))
        result["p_value"] = _clean(2 * _t_survival(abs(centre) / se, df))
        half = _t_quantile(df) * se
        bounds = (centre - half, centre + half)
    result["significant"] = result["p_value"] is not None and result["p_value"] < ALPHA
    if log_scale:
        result["ci95_pct"] = [100.0 * (math.exp(bound) - 1) for bound in bounds]
    elif m0 != 0:
        result["ci95_pct"] = [100.0 * bound / abs(m0) for bound in bounds]
    return result


def geometric_mean_ci(ratios: list[float]) -> tuple[float, list[float] | None]:
    """Geometric mean of paired ratios with its 95 % t-interval (computed on the logs): a cost or noise?"""
    described = describe(np.log(ratios).tolist())
    ci = described["ci95"]
    return math.exp(described["mean"]), [math.exp(ci[0]), math.exp(ci[1])] if ci else None
