"""From the run store to the run's result: per-trial steady-phase KPIs, per-condition statistics,
overheads against the baseline, validity warnings and SLA checks, in the `--json` contract of design.md.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import workloads
from controller import stats
from controller.hostcounters import HOST_METRICS
from controller.spec import Experiment
from controller.store import Store
from workloads.base import MetricInfo, combine

SATURATED_CPU_PCT = 90.0
MIN_STEADY_COVERAGE = 0.8
NOISY_CI_PCT = 10.0
COARSE_SAMPLES = 3  # host samples a steady phase should hold at least
SAMPLE_JITTER = 0.05  # a 1 s sampler's samples last a few ms more; not a reason to call them coarse


def metric_catalogue(experiment: Experiment) -> dict[str, MetricInfo]:
    """Every metric of this experiment with its unit and direction."""
    catalogue: dict[str, MetricInfo] = {}
    for entry in experiment.workloads:
        for field, info in workloads.get(entry.kind).METRICS.items():
            catalogue[f"{entry.label}.{field}"] = info
    return catalogue | HOST_METRICS


def _in_steady(sample: dict[str, Any], start: float, end: float) -> bool:
    middle = sample["t"] + sample["dt"] / 2
    return start <= middle < end


def trial_kpis(
    experiment: Experiment, trial: dict[str, Any], samples: list[dict[str, Any]], host: list[dict[str, Any]]
) -> dict[str, float]:
    """Steady-phase KPIs of one trial: for each metric, agents combined per second, then averaged."""
    start = trial["start_at"] + experiment.timing.warmup
    end = start + experiment.timing.steady
    catalogue = metric_catalogue(experiment)
    per_second: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for sample in samples:
        if not _in_steady(sample, start, end):
            continue
        second = math.floor(sample["t"] + sample["dt"] / 2 - trial["start_at"])
        for field, value in sample["values"].items():
            per_second[f"{sample['workload']}.{field}"][second].append(value)
    combined: dict[str, list[float]] = {}
    for name, seconds in per_second.items():
        combined[name] = [combine(catalogue.get(name), seconds[second]) for second in sorted(seconds)]
    kpis = {name: _mean(values) for name, values in combined.items()} | _host_kpis(host, start, end, catalogue)
    for entry in experiment.workloads:
        hook = getattr(workloads.get(entry.kind), "trial_kpis", None)
        if hook is not None:
            prefix = f"{entry.label}."
            steady = [s for s in samples if s["workload"] == entry.label and _in_steady(s, start, end)]
            fields = {name.removeprefix(prefix): values for name, values in combined.items() if name.startswith(prefix)}
            kpis |= {prefix + name: value for name, value in hook(steady, fields).items()}
    throughput = sum(v for k, v in kpis.items() if k.endswith(".throughput_gbps"))
    if "host.cpu_pct" in kpis and throughput > 0:
        kpis["host.cpu_per_gbps"] = kpis["host.cpu_pct"] / throughput
    return {name: value for name, value in kpis.items() if name in catalogue}  # internal fields stay internal


def _host_kpis(
    host: list[dict[str, Any]], start: float, end: float, catalogue: dict[str, MetricInfo]
) -> dict[str, float]:
    """Host counters over the steady phase: per host, each sample weighted by how much of it lies in the phase
    (1 s Linux samples and 20 s vCenter samples alike), then the hosts combined (sum or mean)."""
    weighted: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for sample in host:
        overlap = min(sample["t"] + sample["dt"], end) - max(sample["t"], start)
        if overlap <= 0:
            continue
        for name, value in sample["values"].items():
            total = weighted[name][sample["host"]]
            total[0] += overlap * value
            total[1] += overlap
    return {
        name: combine(catalogue.get(name), [value / seconds for value, seconds in hosts.values()])
        for name, hosts in weighted.items()
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def analyse(store: Store, run_id: str) -> dict[str, Any]:
    """The run's result object, recomputed from the store."""
    run = store.run(run_id)
    run_id = run["id"]
    experiment = Experiment.model_validate(run["spec"])
    trials = store.trials(run_id)
    samples_by_trial: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for sample in store.samples(run_id):
        samples_by_trial[sample["trial_idx"]].append(sample)
    host_by_trial: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for sample in store.host_samples(run_id):
        host_by_trial[sample["trial_idx"]].append(sample)
    results_by_trial: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for result in store.agent_results(run_id):
        results_by_trial[result["trial_idx"]].append(result)
    flags_by_trial: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for flag in store.flags(run_id):
        flags_by_trial[flag["trial_idx"]].append(flag)

    validity: list[dict[str, Any]] = []
    trial_rows = []
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for trial in trials:
        idx = trial["idx"]
        kpis = (
            trial_kpis(experiment, trial, samples_by_trial[idx], host_by_trial[idx])
            if trial["start_at"] is not None
            else {}
        )
        trial_rows.append(
            {**{k: trial[k] for k in ("idx", "condition", "repetition", "status", "reason")}, "kpis": kpis}
        )
        label = f"trial {idx} ({trial['condition']} #{trial['repetition']})"
        if trial["status"] != "ok":
            validity.append(
                _issue("error", f"trial_{trial['status']}", f"{label} {trial['status']}: {trial['reason']}", idx)
            )
            continue
        validity += _trial_validity(experiment, trial, label, samples_by_trial[idx], results_by_trial[idx], kpis)
        validity += _host_validity(experiment, trial, label, host_by_trial[idx])
        validity += [_issue(f["severity"], f["kind"], f"{label}: {f['message']}", idx) for f in flags_by_trial[idx]]
        if experiment.vsphere.on_migration == "exclude" and any(
            f["kind"] == "vm_migrated" for f in flags_by_trial[idx]
        ):
            validity.append(_issue("error", "trial_excluded", f"{label} left out of the statistics: a VM moved", idx))
            continue
        for name, value in kpis.items():
            values[name][trial["condition"]].append(value)

    baseline = experiment.baseline.name
    names = [c.name for c in experiment.conditions]
    metrics: dict[str, Any] = {}
    for name, info in metric_catalogue(experiment).items():
        if name not in values:
            continue
        by_condition = {c: stats.describe(values[name][c]) for c in names}
        metrics[name] = {
            "unit": info.unit,
            "better": info.better,
            "description": info.description,
            "by_condition": by_condition,
            "overhead": {c: stats.overhead(values[name][baseline], values[name][c]) for c in names if c != baseline},
        }
    validity += _condition_validity(experiment, metrics)
    validity += _appliance_validity(experiment, [s for samples in host_by_trial.values() for s in samples])
    clocks = store.clocks(run_id)
    for reading in clocks:
        if 1000 * reading["uncertainty_s"] > experiment.timing.max_start_skew_ms:
            validity.append(
                _issue(
                    "warning",
                    "clock_uncertain",
                    f"agent {reading['agent']}: clock offset known only to ±{1000 * reading['uncertainty_s']:.1f} ms",
                )
            )
    sla = _sla_checks(experiment, metrics)
    planned = experiment.repetitions * len(experiment.conditions)
    return {
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
        "start_skew_ms": _skew_summary(results_by_trial),
        "metrics": metrics,
        "validity": validity,
        "sla": sla,
        "vsphere": store.notes(run_id).get("vsphere"),
        "passed": not any(v["level"] == "error" for v in validity) and all(s["ok"] for s in sla),
    }


def _skew_summary(results_by_trial: dict[int, list[dict[str, Any]]]) -> dict[str, float | None]:
    """Spread of the agents' actual start times around the common start, over the whole run."""
    skews = [
        1000 * abs(r["start_skew_s"]) for rs in results_by_trial.values() for r in rs if r["start_skew_s"] is not None
    ]
    if not skews:
        return {"max": None, "mean": None}
    return {"max": max(skews), "mean": sum(skews) / len(skews)}


def _issue(level: str, code: str, message: str, trial: int | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"level": level, "code": code, "message": message}
    if trial is not None:
        issue["trial"] = trial
    return issue


def _trial_validity(
    experiment: Experiment,
    trial: dict[str, Any],
    label: str,
    samples: list[dict[str, Any]],
    results: list[dict[str, Any]],
    kpis: dict[str, float],
) -> list[dict[str, Any]]:
    issues = []
    start = trial["start_at"] + experiment.timing.warmup
    end = start + experiment.timing.steady
    for entry in experiment.workloads:
        hook = getattr(workloads.get(entry.kind), "warnings", None)
        if hook is None:
            continue
        prefix = f"{entry.label}."
        own = {name.removeprefix(prefix): value for name, value in kpis.items() if name.startswith(prefix)}
        warned = any(
            s["values"].get("cpu_warning")
            for s in samples
            if s["workload"] == entry.label and _in_steady(s, start, end)
        )
        for code, message in hook(own, entry.params, warned):
            issues.append(_issue("warning", code, f"{label}: {entry.label}: {message}", trial["idx"]))
    cpu = kpis.get("host.cpu_pct")
    if cpu is not None and cpu >= SATURATED_CPU_PCT:
        issues.append(
            _issue(
                "warning",
                "host_saturated",
                f"{label}: host CPU {cpu:.0f} % in the steady phase; the load generators share the host with what "
                "they measure, so this may measure the generator, not the appliance",
                trial["idx"],
            )
        )
    expected = experiment.timing.steady * MIN_STEADY_COVERAGE
    limit_ms = experiment.timing.max_start_skew_ms
    for result in results:
        skew_ms = 1000 * (result["start_skew_s"] or 0.0)
        if abs(skew_ms) > limit_ms:
            issues.append(
                _issue(
                    "warning",
                    "start_skew",
                    f"{label}: agent {result['agent']} started {skew_ms:+.1f} ms off the common start "
                    f"(limit {limit_ms:g} ms)",
                    trial["idx"],
                )
            )
        seconds = sum(
            s["dt"]
            for s in samples
            if s["agent"] == result["agent"] and s["workload"] == result["workload"] and _in_steady(s, start, end)
        )
        if seconds < expected:
            issues.append(
                _issue(
                    "warning",
                    "steady_incomplete",
                    f"{label}: {result['workload']} on {result['agent']} has {seconds:.1f} s of samples in a "
                    f"{experiment.timing.steady:g} s steady phase",
                    trial["idx"],
                )
            )
    return issues


def _host_validity(
    experiment: Experiment, trial: dict[str, Any], label: str, host: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every hypervisor agent's host counters cover the steady phase (an agent lost or late leaves gaps), and
    host samples are fine enough for it (vCenter's are 20 s long)."""
    start = trial["start_at"] + experiment.timing.warmup
    end = start + experiment.timing.steady
    issues = []
    coarsest = max((s["dt"] for s in host), default=0.0)
    if coarsest * COARSE_SAMPLES > experiment.timing.steady * (1 + SAMPLE_JITTER):
        issues.append(
            _issue(
                "warning",
                "host_counters_coarse",
                f"{label}: host counters come in {coarsest:.3g} s samples, too coarse for a "
                f"{experiment.timing.steady:g} s steady phase: warm-up and cool-down leak into them; make the steady "
                f"phase at least {COARSE_SAMPLES * coarsest:.3g} s",
                trial["idx"],
            )
        )
    for agent in experiment.agents:
        if not agent.hypervisor:
            continue
        seconds = sum(s["dt"] for s in host if s.get("agent") == agent.name and _in_steady(s, start, end))
        if seconds < experiment.timing.steady * MIN_STEADY_COVERAGE:
            issues.append(
                _issue(
                    "warning",
                    "host_counters_incomplete",
                    f"{label}: host counters of hypervisor agent {agent.name} cover {seconds:.1f} s of a "
                    f"{experiment.timing.steady:g} s steady phase",
                    trial["idx"],
                )
            )
    return issues


def _appliance_validity(experiment: Experiment, host: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A pattern that matched no process in the whole run is a typo more likely than an idle appliance."""
    issues = []
    for agent in experiment.agents:
        if agent.appliance_processes is None:
            continue
        found = [s["appliance"]["processes"] for s in host if s.get("agent") == agent.name and "appliance" in s]
        if found and not any(found):
            issues.append(
                _issue(
                    "warning",
                    "appliance_not_found",
                    f"hypervisor agent {agent.name}: no process matched appliance_processes "
                    f"{agent.appliance_processes!r} in any trial, so appliance.host_cpu_pct is 0",
                )
            )
    return issues


def _condition_validity(experiment: Experiment, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    issues = []
    for condition in experiment.conditions:
        n = max((m["by_condition"][condition.name]["n"] for m in metrics.values()), default=0)
        if n < 2:
            issues.append(
                _issue(
                    "warning" if n else "error",
                    "too_few_repetitions",
                    f"condition {condition.name}: {n} valid repetition(s); a confidence interval needs at least 2",
                )
            )
    for name, metric in metrics.items():
        if not name.endswith("throughput_gbps"):
            continue
        for condition, described in metric["by_condition"].items():
            if described["ci95"] and described["mean"]:
                width = 100.0 * (described["ci95"][1] - described["mean"]) / abs(described["mean"])
                if width > NOISY_CI_PCT:
                    issues.append(
                        _issue(
                            "warning",
                            "noisy",
                            f"{name} under {condition}: 95 % CI is ±{width:.0f} % of the mean; add repetitions",
                        )
                    )
    return issues


def _sla_checks(experiment: Experiment, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
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
