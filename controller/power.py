"""`vtax plan SPEC --detect 3%`: how many repetitions a spec needs so that a change of that size is found
(80 % power), from the noise a previous run of the same workloads and timing showed on this test bed.

The noise is measured on the scale the analysis tests on (`controller.stats`): for a spec whose repetitions
run side by side, the sd of the per-block log ratios of each condition to the baseline (pooled over the
conditions); otherwise the coefficient of variation within each condition (pooled). A noise run without
complete blocks can still plan a paired spec, unpaired (a paired run usually needs fewer). The sd itself is
known only roughly from a few repetitions, so the plan also gives the repetitions at its 90 % upper bound.
With k conditions against the baseline the plan uses α/k, the first step of Holm's procedure (conservative).
"""

from __future__ import annotations

import math
from typing import Literal, TypedDict

import numpy as np

from controller import stats
from controller.analysis import analyse_values, check_comparable
from controller.errors import InputError
from controller.spec import Experiment, metric_catalogue
from controller.store import Store

UPPER_CONFIDENCE = 0.90  # the noise's one-sided upper bound the cautious figure plans for


class MetricPlan(TypedDict):
    """One metric's noise and the repetitions per condition a change of `detect_pct` needs."""

    metric: str
    method: Literal["paired", "welch"]
    noise_pct: float | None  # sd of a block's log ratio, or the CV within a condition, in %
    noise_df: int  # degrees of freedom of that sd: how well it is known
    repetitions: int | None  # None: over MOST_REPETITIONS, or no noise measured
    repetitions_cautious: int | None  # at the noise's 90 % upper bound
    spec_detects_pct: float | None  # the change the spec's own repetitions could see


class Plan(TypedDict):
    """`vtax plan --json`."""

    spec: str
    detect_pct: float
    alpha: float
    power: float
    noise_run: str
    metrics: list[MetricPlan]


MOST_REPETITIONS = 1000


def parse_effect(text: str) -> float:
    """'3%', '3 %', '3' or '0.5%' → the percentage; a clear error otherwise."""
    try:
        value = float(text.strip().removesuffix("%").strip())
    except ValueError:
        raise InputError(f"--detect: expected a percentage such as 3% (got {text!r})") from None
    if not 0 < value < 1000 or not math.isfinite(value):
        raise InputError(f"--detect: expected a change between 0 and 1000 % (got {text!r})")
    return value


def noise_run(store: Store, experiment: Experiment, run_id: str | None) -> str:
    """The run whose noise plans the spec: `run_id` if given, else the newest completed run of the same
    workloads and timing (a previous run of the spec, or an A/A run: two identical conditions)."""
    dumped = experiment.model_dump(mode="json")
    wanted = {"workloads": dumped["workloads"], "timing": dumped["timing"]}
    if run_id is not None:
        run = store.run(run_id)
        check_comparable([{"run_id": "the spec", "spec": wanted}, {"run_id": run["id"], "spec": run["spec"]}])
        return run["id"]
    for row in store.runs(limit=None, status="completed"):
        spec = store.run(row["id"])["spec"]
        if spec.get("workloads") == wanted["workloads"] and spec.get("timing") == wanted["timing"]:
            return row["id"]
    raise InputError(
        f"{store.path}: no completed run with this spec's workloads and timing, so there is no noise to plan "
        "from; run the spec once (or an A/A: the spec with two identical conditions) and plan again, or give "
        "--from RUN"
    )


def plan(store: Store, experiment: Experiment, spec_name: str, detect_pct: float, run_id: str | None) -> Plan:
    """Repetitions per condition for every metric the noise run measured."""
    chosen = noise_run(store, experiment, run_id)
    result, values = analyse_values(store, chosen)
    comparisons = max(1, len(experiment.conditions) - 1)
    alpha = stats.ALPHA / comparisons
    paired_spec = experiment.order != "blocked" and len(experiment.conditions) > 1
    blocked_run = Experiment.model_validate(result["spec"]).order != "blocked"
    metrics: list[MetricPlan] = []
    for name in metric_catalogue(experiment):
        if name not in values:
            continue
        noise = _paired_noise(values[name], result["baseline"]) if paired_spec and blocked_run else None
        method: Literal["paired", "welch"] = "paired" if noise is not None else "welch"
        noise = noise or _within_noise(values[name])
        metrics.append(_metric_plan(name, method, noise, detect_pct, experiment.repetitions, alpha))
    return {
        "spec": spec_name,
        "detect_pct": detect_pct,
        "alpha": alpha,
        "power": stats.POWER,
        "noise_run": chosen,
        "metrics": metrics,
    }


def _metric_plan(
    name: str,
    method: Literal["paired", "welch"],
    noise: tuple[float, int] | None,
    detect_pct: float,
    spec_repetitions: int,
    alpha: float,
) -> MetricPlan:
    if noise is None:
        return {
            "metric": name,
            "method": method,
            "noise_pct": None,
            "noise_df": 0,
            "repetitions": None,
            "repetitions_cautious": None,
            "spec_detects_pct": None,
        }
    from scipy.stats import chi2

    sd, df = noise
    if sd == 0:  # every repetition alike (a paced rate): the fewest repetitions a CI needs will do
        sd = 1e-12
    paired = method == "paired"
    cautious = sd * math.sqrt(df / float(chi2.ppf(1 - UPPER_CONFIDENCE, df)))
    n = spec_repetitions
    se = sd / math.sqrt(n) if paired else sd * math.sqrt(2.0 / n)
    detectable = stats.mde(se, n - 1 if paired else 2 * n - 2, alpha=alpha) if n >= 2 else None
    return {
        "metric": name,
        "method": method,
        "noise_pct": 100.0 * sd,
        "noise_df": df,
        "repetitions": stats.repetitions_for(detect_pct, sd, paired=paired, alpha=alpha, most=MOST_REPETITIONS),
        "repetitions_cautious": stats.repetitions_for(
            detect_pct, cautious, paired=paired, alpha=alpha, most=MOST_REPETITIONS
        ),
        "spec_detects_pct": None if detectable is None else 100.0 * math.expm1(detectable),
    }


def _paired_noise(by_condition: dict[str, dict[int, float]], baseline: str) -> tuple[float, int] | None:
    """The pooled sd of the per-block log ratios of every condition to the baseline, and its degrees of
    freedom; None without two complete blocks of positive values."""
    squares, df = 0.0, 0
    for condition, by_repetition in by_condition.items():
        if condition == baseline:
            continue
        common = sorted(set(by_repetition) & set(by_condition.get(baseline, {})))
        pairs = np.asarray([(by_condition[baseline][k], by_repetition[k]) for k in common], dtype=float)
        if len(pairs) < 2 or not np.all(pairs > 0):
            continue
        ratios = np.log(pairs[:, 1] / pairs[:, 0])
        squares += float(((ratios - ratios.mean()) ** 2).sum())
        df += len(ratios) - 1
    return (math.sqrt(squares / df), df) if df else None


def _within_noise(by_condition: dict[str, dict[int, float]]) -> tuple[float, int] | None:
    """The pooled coefficient of variation within the conditions (the Welch model's noise on the log scale)."""
    squares, df = 0.0, 0
    for by_repetition in by_condition.values():
        values = np.asarray(list(by_repetition.values()), dtype=float)
        if len(values) < 2 or values.mean() <= 0:
            continue
        squares += float(((values / values.mean() - 1.0) ** 2).sum())
        df += len(values) - 1
    return (math.sqrt(squares / df), df) if df else None
