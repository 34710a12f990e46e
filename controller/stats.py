"""Statistics over repetitions: means with t-intervals, overheads against the baseline, their correction for
several conditions, a ranking with rank intervals, and the minimum detectable effect.

Each trial contributes one value per metric (its steady-phase KPI), so n is the number of repetitions. An
overhead's CI and its p-value always come from one model on one scale, so a change is significant exactly when
its CI excludes 0:

- **paired** (interleaved or random order: repetition k of every condition ran side by side, a block): the
  log of condition ÷ baseline within each block, then a t-interval on those logs (the plain difference where a
  value is not positive). Drift between blocks cancels out.
- **welch** (blocked order, or fewer than 2 complete blocks): the log of the ratio of means (delta method,
  Welch–Satterthwaite degrees of freedom), or the difference of means where a mean is not positive.

The minimum detectable effect (MDE) is the smallest change the same test, with this noise and these
repetitions, finds with 80 % power at α = 0.05 (from the noncentral t distribution, not a normal
approximation: with 3 repetitions the difference is large).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Literal, NotRequired, TypedDict

import numpy as np

ALPHA = 0.05
POWER = 0.80
OUTLIER_MADS = 3.0  # a trial further than this many (normal-scaled) MADs from its condition's median is flagged…
OUTLIER_FALSE_RATE = 0.01  # …and further than normal noise would put one of n values more than 1 % of the time
OUTLIER_SIMULATIONS = 20_000


class Description(TypedDict):
    """One condition's values of one metric, summarised."""

    mean: float | None
    sd: float | None
    ci95: list[float] | None  # [low, high]; None when n < 2
    n: int
    values: list[float]


class Overhead(TypedDict):
    """A condition against the baseline (or any two conditions)."""

    delta: float | None
    pct: float | None
    ci95_pct: list[float] | None
    p_value: float | None
    significant: bool
    method: NotRequired[Literal["paired", "welch"]]
    n_pairs: NotRequired[int]  # paired: the complete blocks used
    p_adjusted: NotRequired[float | None]  # Holm over the run's comparisons of this metric
    mde_pct: NotRequired[float | None]  # the smallest change (±, %) this test could have found


class Ranked(TypedDict):
    """One condition's place among all, in the metric's better direction."""

    condition: str
    mean: float | None
    rank: int  # by mean, 1 = best
    rank_interval: list[int]  # [best, worst] the pairwise tests allow


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _t_quantile(df: float) -> float:
    """Two-sided 95 % quantile of Student's t."""
    from scipy.special import stdtrit  # scipy.special, not scipy.stats: 0.4 s to import rather than 1.4 s

    return float(stdtrit(df, 1 - ALPHA / 2))


def _t_survival(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    from scipy.special import stdtr

    return float(stdtr(df, -t))  # by symmetry, P(T > t) = P(T < -t)


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


def _scale(values: np.ndarray) -> bool:
    """Whether a comparison can be made on the log (ratio) scale: every value is positive."""
    return bool(values.size) and bool(np.all(values > 0))


def overhead(baseline: list[float], condition: list[float]) -> Overhead:
    """delta, pct, ci95_pct [low, high], p_value and significant of `condition` against `baseline`.

    The interval and the p-value come from one model on one scale, so that `significant` (p < 0.05) holds
    exactly when the interval excludes no change: the log of the ratio of means where both means are positive
    (a ratio's interval is asymmetric, as it should be), else the difference of means; Welch's standard error
    and degrees of freedom either way.
    """
    base, cond = np.asarray(baseline, dtype=float), np.asarray(condition, dtype=float)
    result: Overhead = {
        "delta": None,
        "pct": None,
        "ci95_pct": None,
        "p_value": None,
        "significant": False,
        "method": "welch",
        "mde_pct": None,
    }
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
    df = (a + b) ** 2 / ((a**2 / (cond.size - 1) if a else 0.0) + (b**2 / (base.size - 1) if b else 0.0)) if se else 0.0
    return _t_test(result, centre, se, df, log_scale, m0)


def _t_test(result: Overhead, centre: float, se: float, df: float, log_scale: bool, reference: float) -> Overhead:
    """The p-value, significance, CI and MDE of a change `centre` ± `se` on the test's scale, into `result`: one
    model for all of them, so the CI excludes 0 exactly when p < ALPHA."""
    if se == 0:  # no spread at all: the difference is exact
        result["p_value"] = 1.0 if centre == 0 else 0.0
        bounds = (centre, centre)
    else:
        result["p_value"] = _clean(2 * _t_survival(abs(centre) / se, df))
        half = _t_quantile(df) * se
        bounds = (centre - half, centre + half)
        result["mde_pct"] = _as_pct(mde(se, df), log_scale, reference)
    result["significant"] = result["p_value"] is not None and result["p_value"] < ALPHA
    result["ci95_pct"] = _interval_pct(bounds, log_scale, reference)
    return result


def _as_pct(change: float | None, log_scale: bool, reference: float) -> float | None:
    """A change on the test's scale (a log ratio, or a difference) as % of the reference."""
    if change is None:
        return None
    if log_scale:
        return _clean(100.0 * (math.exp(change) - 1))
    return _clean(100.0 * change / abs(reference)) if reference else None


def _interval_pct(bounds: tuple[float, float], log_scale: bool, reference: float) -> list[float] | None:
    low, high = _as_pct(bounds[0], log_scale, reference), _as_pct(bounds[1], log_scale, reference)
    return None if low is None or high is None else [low, high]


def paired_overhead(pairs: list[tuple[float, float]]) -> Overhead:
    """A condition against the baseline from complete blocks, (baseline, condition) per block: a t-interval on
    the per-block log ratios (differences where a value is not positive), and its p-value and MDE."""
    base = np.asarray([b for b, _ in pairs], dtype=float)
    cond = np.asarray([c for _, c in pairs], dtype=float)
    result: Overhead = {
        "delta": None,
        "pct": None,
        "ci95_pct": None,
        "p_value": None,
        "significant": False,
        "method": "paired",
        "n_pairs": len(pairs),
        "mde_pct": None,
    }
    if not pairs:
        return result
    m0 = float(base.mean())
    result["delta"] = float(cond.mean()) - m0
    log_scale = _scale(base) and _scale(cond)
    steps = np.log(cond / base) if log_scale else cond - base
    centre = float(steps.mean())
    result["pct"] = _as_pct(centre, log_scale, m0)
    if len(pairs) < 2:
        return result
    se = float(steps.std(ddof=1)) / math.sqrt(len(pairs))
    return _t_test(result, centre, se, len(pairs) - 1, log_scale, m0)


def compare(baseline: Mapping[int, float], condition: Mapping[int, float], *, blocked_by_repetition: bool) -> Overhead:
    """A condition against the baseline, each given as repetition → value: paired by repetition when the
    repetitions ran side by side (interleaved or random order) and at least 2 are complete, else Welch."""
    common = sorted(set(baseline) & set(condition))
    if blocked_by_repetition and len(common) >= 2:
        return paired_overhead([(baseline[k], condition[k]) for k in common])
    return overhead(list(baseline.values()), list(condition.values()))


def mde(se: float, df: float, *, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true change (on the test's scale) that a two-sided t-test with this standard error and these
    degrees of freedom detects with `power`: solved on the noncentral t distribution."""
    if se <= 0 or df <= 0 or not math.isfinite(se):
        return None
    multiple = _detectable_multiple(round(df, 1), alpha, power)  # to 0.1 degree of freedom: far below the noise
    return None if multiple is None else multiple * se


@functools.cache
def _detectable_multiple(df: float, alpha: float, power: float) -> float | None:
    """The noncentrality (the change in standard errors) at which the t-test's power reaches `power`."""
    from scipy.optimize import brentq
    from scipy.special import nctdtr, stdtrit

    critical = stdtrit(df, 1 - alpha / 2)

    def shortfall(noncentrality: float) -> float:
        detected = 1 - nctdtr(df, noncentrality, critical) + nctdtr(df, noncentrality, -critical)
        return float(detected - power) if math.isfinite(detected) else 1.0  # NaN only where power is ~1

    high = 2.0
    while shortfall(high) < 0:  # widen the bracket until it holds the answer (df = 1 needs about 10)
        high *= 2
        if high > 1e4:
            return None
    return float(brentq(shortfall, 0.0, high))


def repetitions_for(
    effect_pct: float, sd_log: float, *, paired: bool, alpha: float = ALPHA, most: int = 1000
) -> int | None:
    """How many repetitions per condition a change of `effect_pct` % needs to be found with 80 % power at `alpha`,
    given the noise `sd_log` (sd of the per-block log ratios when paired; of log values per condition when not)."""
    target = abs(math.log1p(effect_pct / 100.0))
    for n in range(2, most + 1):
        se = sd_log / math.sqrt(n) if paired else sd_log * math.sqrt(2.0 / n)
        df = n - 1 if paired else 2 * n - 2
        found = mde(se, df, alpha=alpha)
        if found is not None and found <= target:
            return n
    return None


def significant(over: Overhead) -> bool:
    """Whether a change counts as found: by its Holm-adjusted p-value where it is one of several comparisons,
    else by its own. (Its CI is not adjusted, so a CI just off zero can still be "not found" among several.)"""
    p_value = over.get("p_adjusted", over["p_value"])
    return p_value is not None and p_value < ALPHA


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the given order; a missing p-value stays missing.

    Written out (the step-down rule is four lines) rather than taken from statsmodels, whose import cost every
    `vtax run` and `vtax show` 1.2 s; tests check it against statsmodels' `multipletests`."""
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = list(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))  # step-down, kept monotone
        adjusted[i] = running
    return adjusted


def ranking(
    by_condition: Mapping[str, Mapping[int, float]],
    *,
    better: Literal["higher", "lower"],
    blocked: Callable[[str, str], bool],
) -> tuple[list[Ranked], list[dict[str, object]]]:
    """Every condition ranked in the metric's better direction, with a rank interval from all pairwise tests
    (Holm over all pairs): a condition can rank no better than 1 + the conditions significantly better than it,
    and no worse than the count of conditions minus those significantly worse. Also the pairwise comparisons;
    `blocked(a, b)`: whether a and b ran side by side, repetition k of each in one block (then paired)."""
    names = [name for name, values in by_condition.items() if values]
    means = {name: float(np.mean(list(by_condition[name].values()))) for name in names}
    pairs = list(itertools.combinations(names, 2))
    tests = [compare(by_condition[a], by_condition[b], blocked_by_repetition=blocked(a, b)) for a, b in pairs]
    adjusted = holm([t["p_value"] for t in tests])
    pairwise: list[dict[str, object]] = []
    beats: dict[str, set[str]] = {name: set() for name in names}  # name → conditions it is significantly better than
    for (a, b), test, p_adj in zip(pairs, tests, adjusted, strict=True):
        significant = p_adj is not None and p_adj < ALPHA
        pairwise.append({"a": a, "b": b, **test, "p_adjusted": p_adj, "significant": significant})
        if significant:  # b against a: delta = mean(b) − mean(a)
            b_higher = (test["delta"] or 0.0) > 0
            winner, loser = (b, a) if b_higher == (better == "higher") else (a, b)
            beats[winner].add(loser)
    order = sorted(names, key=lambda name: means[name], reverse=better == "higher")
    ranked: list[Ranked] = []
    for rank, name in enumerate(order, 1):
        better_than_me = sum(name in beats[other] for other in names)
        ranked.append(
            {
                "condition": name,
                "mean": means[name],
                "rank": rank,
                "rank_interval": [1 + better_than_me, len(names) - len(beats[name])],
            }
        )
    return ranked, pairwise


def outliers(values: Mapping[int, float]) -> dict[int, float]:
    """The keys whose value lies further than `outlier_limit(n)` normal-scaled MADs (1.4826 × MAD) from the
    median, each with its distance in MADs; none when the MAD is 0 (most values equal) or there are fewer than 4
    values. Flagged, never dropped."""
    if len(values) < 4:
        return {}
    arr = np.asarray(list(values.values()), dtype=float)
    median = float(np.median(arr))
    mad = 1.4826 * float(np.median(np.abs(arr - median)))
    if mad == 0:
        return {}
    limit = outlier_limit(len(values))
    distances = {key: abs(value - median) / mad for key, value in values.items()}
    return {key: distance for key, distance in distances.items() if distance > limit}


@functools.cache
def outlier_limit(n: int) -> float:
    """How many MADs from the median make an outlier among n values: at least OUTLIER_MADS, and far enough that
    normal noise alone flags one of n values only OUTLIER_FALSE_RATE of the time. (Measured: a plain 3-MAD rule
    flags a value in about 20 % of normal samples at every n from 4 to 30, because the MAD of a few values is
    itself noisy; at n = 6 the 1 % point is about 10 MADs.) Found by a seeded simulation, so it is the same on
    every run; by hand, since no library tabulates it."""
    rng = np.random.default_rng(20261202)
    rows = max(1, 2**20 // n)  # simulations drawn at once: a soak's 1,440 segments at once would take 600 MB
    furthest = []
    for first in range(0, OUTLIER_SIMULATIONS, rows):  # the same draws, in the same order, as all at once
        draws = rng.standard_normal((min(rows, OUTLIER_SIMULATIONS - first), n))
        deviations = np.abs(draws - np.median(draws, axis=1, keepdims=True))
        furthest.append(deviations.max(axis=1) / (1.4826 * np.median(deviations, axis=1)))
    return max(OUTLIER_MADS, float(np.quantile(np.concatenate(furthest), 1 - OUTLIER_FALSE_RATE)))


def geometric_mean_ci(ratios: list[float]) -> tuple[float, list[float] | None]:
    """Geometric mean of paired ratios with its 95 % t-interval (computed on the logs): a cost or noise?"""
    described = describe(np.log(ratios).tolist())
    ci = described["ci95"]
    return math.exp(described["mean"]), [math.exp(ci[0]), math.exp(ci[1])] if ci else None
