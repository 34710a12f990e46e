"""Statistics over repetitions: means with t-intervals, and overheads against the baseline.

Each trial contributes one value per metric (its steady-phase KPI), so n is the number of repetitions.
The overhead's CI is computed on the log of the ratio of means (delta method, Welch–Satterthwaite degrees
of freedom), which keeps the interval asymmetric as a ratio should be; p-values come from Welch's t-test.
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
    """delta, pct, ci95_pct [low, high], p_value and significant of `condition` against `baseline`."""
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
    if v0 == 0 and v1 == 0:
        result["p_value"] = 1.0 if m0 == m1 else 0.0
    else:
        from scipy import stats  # half a second to import: only commands that analyse pay for it

        result["p_value"] = _clean(stats.ttest_ind(cond, base, equal_var=False).pvalue)
    result["significant"] = result["p_value"] is not None and result["p_value"] < ALPHA
    result["ci95_pct"] = _ratio_ci(m0, v0, base.size, m1, v1, cond.size)
    return result


def _ratio_ci(m0: float, v0: float, n0: int, m1: float, v1: float, n1: int) -> list[float] | None:
    """CI of 100·(m1/m0 − 1): on the log scale when both means are positive, else Welch on the difference."""
    if m0 > 0 and m1 > 0:
        a, b = v1 / (n1 * m1**2), v0 / (n0 * m0**2)
        centre = math.log(m1 / m0)
    elif m0 != 0:
        a, b = v1 / n1, v0 / n0
        centre = m1 - m0
    else:
        return None
    se = math.sqrt(a + b)
    if se == 0:
        bounds = (centre, centre)
    else:
        df = (a + b) ** 2 / ((a**2 / (n1 - 1) if a else 0.0) + (b**2 / (n0 - 1) if b else 0.0))
        half = _t_quantile(df) * se
        bounds = (centre - half, centre + half)
    if m0 > 0 and m1 > 0:
        return [100.0 * (math.exp(bound) - 1) for bound in bounds]
    return [100.0 * bound / abs(m0) for bound in bounds]


def geometric_mean_ci(ratios: list[float]) -> tuple[float, list[float] | None]:
    """Geometric mean of paired ratios with its 95 % t-interval (computed on the logs): a cost or noise?"""
    described = describe(np.log(ratios).tolist())
    ci = described["ci95"]
    return math.exp(described["mean"]), [math.exp(ci[0]), math.exp(ci[1])] if ci else None
