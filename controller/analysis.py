"""From the run store to the run's result: per-trial steady-phase KPIs (`controller.kpis`), per-condition
statistics, overheads against the baseline, validity findings (`controller.validity`) and SLA checks, in the
`--json` contract (docs/reference/result-json.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, TypedDict

from controller import stats
from controller.kpis import trial_kpis
from controller.spec import Experiment, metric_catalogue
from controller.store import Store, StoredResult
from controller.validity import (
    Issue,
    MetricResult,
    appliance_issues,
    clock_issues,
    condition_issues,
    issue,
    trial_issues,
    version_issues,
)
from workloads.base import MetricInfo

# the result JSON's format: raised when a key's meaning changes; keys are only ever added, never renamed or dropped
FORMAT_VERSION = 1


class SlaCheck(TypedDict):
    """One SLA rule applied to one condition (condition None: the metric was not measured at all)."""

    metric: str
    condition: str | None
    rule: str  # present, min, max, max_change_pct
    limit: float | None
    value: float | None
    ok: bool


def _by_trial(rows: Iterable[Any]) -> defaultdict[int, list[Any]]:
    grouped: defaultdict[int, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row["trial_idx"]].append(row)
    return grouped


def analyse(store: Store, run_id: str) -> dict[str, Any]:
    """The run's result object, recomputed from the store."""
    run = store.run(run_id)
    run_id = run["id"]
    experiment = Experiment.model_validate(run["spec"])
    trials = store.trials(run_id)
    samples_by_trial = _by_trial(store.samples(run_id))
    host_by_trial = _by_trial(store.host_samples(run_id))
    results_by_trial = _by_trial(store.agent_results(run_id))
    flags_by_trial = _by_trial(store.flags(run_id))

    clocks = store.clocks(run_id)
    uncertainty = {c["agent"]: c["uncertainty_s"] for c in clocks}
    validity: list[Issue] = []
    trial_rows = []
    # metric → condition → repetition → the trial's value, and which trial it was
    values: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    trial_of: dict[tuple[str, int], int] = {}
    for trial in trials:
        idx = trial["idx"]
        kpis = (
            trial_kpis(experiment, trial["start_at"], samples_by_trial[idx], host_by_trial[idx])
            if trial["start_at"] is not None
            else {}
        )
        trial_rows.append(
            {
                **{k: trial[k] for k in ("idx", "condition", "repetition", "status", "reason", "start_at", "ended")},
                "kpis": kpis,
            }
        )
        found, counts = trial_issues(
            experiment,
            trial,
            samples_by_trial[idx],
            host_by_trial[idx],
            results_by_trial[idx],
            flags_by_trial[idx],
            kpis,
            uncertainty,
        )
        validity += found
        if counts:
            trial_of[(trial["condition"], trial["repetition"])] = idx
            for name, value in kpis.items():
                values[name][trial["condition"]][trial["repetition"]] = value

    baseline = experiment.baseline.name
    names = [c.name for c in experiment.conditions]
    side_by_side = experiment.order != "blocked"  # interleaved or random within each repetition: blocks
    metrics: dict[str, MetricResult] = {}
    for name, info in metric_catalogue(experiment).items():
        if name not in values:
            continue
        metrics[name] = _metric(info, values[name], names, baseline, side_by_side)
    validity += condition_issues(experiment, metrics)
    validity += _outlier_issues(values, trial_of)
    validity += appliance_issues(experiment, [s for samples in host_by_trial.values() for s in samples])
    validity += clock_issues(experiment, clocks)
    notes = store.notes(run_id)
    environment = notes.get("environment")
    validity += version_issues(environment)
    sla = _sla_checks(experiment, metrics)
    planned = experiment.repetitions * len(experiment.conditions)
    return {
        "format_version": FORMAT_VERSION,
        "vtax_version": environment["controller"]["vtax"] if environment else None,
        "run_id": run_id,
        "name": run["name"],
        "engine": run["engine"],
        "status": run["status"],
        "reason": run["reason"],
        "spec_path": run["spec_path"],
        "store": store.path,
        "created": run["created"],
        "finished": run["finished"],
        "baseline": baseline,
        "conditions": names,
        "repetitions": experiment.repetitions,
        "order": [t["condition"] for t in trials],
        "trials_planned": planned,
        "trials": trial_rows,
        "clocks": {c["agent"]: {k: c[k] for k in ("offset_s", "uncertainty_s", "rtt_s")} for c in clocks},
        "start_skew_ms": _skew_summary(results_by_trial, uncertainty),
        "metrics": metrics,
        "validity": validity,
        "sla": sla,
        "vsphere": notes.get("vsphere"),
        "agent_rejoins": notes.get("agent_rejoins", []),
        "environment": environment,
        "spec": run["spec"],
        "passed": not any(v["level"] == "error" for v in validity) and all(s["ok"] for s in sla),
    }


def _metric(
    info: MetricInfo,
    values: dict[str, dict[int, float]],
    names: list[str],
    baseline: str,
    side_by_side: bool,
) -> MetricResult:
    """One metric across conditions: each described, each non-baseline one against the baseline (paired where
    the repetitions ran side by side; p-values also Holm-adjusted for the number of conditions), and all ranked."""
    overheads = {
        c: stats.compare(values[baseline], values[c], blocked_by_repetition=side_by_side)
        for c in names
        if c != baseline
    }
    for over, adjusted in zip(overheads.values(), stats.holm([o["p_value"] for o in overheads.values()]), strict=True):
        over["p_adjusted"] = adjusted
    ranked, pairwise = stats.ranking(
        {c: values[c] for c in names}, better=info.better, blocked_by_repetition=side_by_side
    )
    return {
        "unit": info.unit,
        "better": info.better,
        "description": info.description,
        "by_condition": {c: stats.describe(list(values[c].values())) for c in names},
        "overhead": overheads,
        "ranking": ranked,
        "pairwise": pairwise,
    }


def _outlier_issues(
    values: dict[str, dict[str, dict[int, float]]], trial_of: dict[tuple[str, int], int]
) -> list[Issue]:
    """A trial whose KPI lies more than 3 MADs from its condition's median: flagged (it still counts)."""
    found = []
    for name, by_condition in values.items():
        for condition, by_repetition in by_condition.items():
            for repetition in stats.outliers(by_repetition):
                found.append(
                    issue(
                        "warning",
                        "outlier",
                        f"{name} under {condition} #{repetition}: {by_repetition[repetition]:.4g} lies more than "
                        f"{stats.OUTLIER_MADS:g} MADs from the condition's median; it still counts, look at that trial",
                        trial_of[(condition, repetition)],
                    )
                )
    return found


def _skew_summary(
    results_by_trial: dict[int, list[StoredResult]], uncertainty_s: dict[str, float]
) -> dict[str, float | None]:
    """Spread of the agents' actual start times around the common start, over the whole run, and how well it is
    known: the largest clock uncertainty of the agents that started (each skew is known only to ± that)."""
    started = [r for rs in results_by_trial.values() for r in rs if r["start_skew_s"] is not None]
    if not started:
        return {"max": None, "mean": None, "uncertainty": None}
    skews = [1000 * abs(r["start_skew_s"] or 0.0) for r in started]
    known = max(1000 * uncertainty_s.get(r["agent"], 0.0) for r in started)
    return {"max": max(skews), "mean": sum(skews) / len(skews), "uncertainty": known}


def _sla_checks(experiment: Experiment, metrics: dict[str, MetricResult]) -> list[SlaCheck]:
    checks: list[SlaCheck] = []
    for name, rule in experiment.sla.items():
        metric = metrics.get(name)
        if metric is None:
            checks.append(
                {"metric": name, "condition": None, "rule": "present", "limit": None, "value": None, "ok": False}
            )
            continue
        for condition, described in metric["by_condition"].items():
            mean = described["mean"]
            for kind, limit, ok in (
                ("min", rule.min, lambda v, lim: v >= lim),
                ("max", rule.max, lambda v, lim: v <= lim),
            ):
                if limit is not None:
                    checks.append(
                        {
                            "metric": name,
                            "condition": condition,
                            "rule": kind,
                            "limit": limit,
                            "value": mean,
                            "ok": mean is not None and ok(mean, limit),
                        }
                    )
        if rule.max_change_pct is not None:
            for condition, over in metric["overhead"].items():
                pct = over["pct"]
                checks.append(
                    {
                        "metric": name,
                        "condition": condition,
                        "rule": "max_change_pct",
                        "limit": rule.max_change_pct,
                        "value": pct,
                        "ok": pct is not None and abs(pct) <= rule.max_change_pct,
                    }
                )
    return checks
