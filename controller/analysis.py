"""From the run store to the run's result: per-trial steady-phase KPIs (`controller.kpis`), per-condition
statistics, overheads against the baseline, validity findings (`controller.validity`) and SLA checks, in the
`--json` contract (docs/reference/result-json.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, TypedDict

from agent.wire import TrialRecord
from controller import stats
from controller.calibration import calibrated_bed
from controller.consolidation import consolidation
from controller.errors import InputError
from controller.facts import no_facts, trial_facts
from controller.search import Capacity, bed_issues, capacities
from controller.soak import soak_issues, soak_result
from controller.spec import Experiment, metric_catalogue
from controller.store import HostFacts, Store, StoredResult, TrialFacts
from controller.tiles import TileCapacity, tile_capacities
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
from workloads.histogram import Histogram

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


# metric → condition → repetition → the trial's value (only trials that count)
Values = dict[str, dict[str, dict[int, float]]]


def analyse(store: Store, run_id: str) -> dict[str, Any]:
    """The run's result object, recomputed from the store."""
    return analyse_values(store, run_id)[0]


def analyse_values(store: Store, run_id: str) -> tuple[dict[str, Any], Values]:
    """The run's result and the values its statistics came from (a study or a comparison of runs reuses them)."""
    run = store.run(run_id)
    run_id = run["id"]
    experiment = Experiment.model_validate(run["spec"])
    trials = store.trials(run_id)
    results_by_trial = _by_trial(store.agent_results(run_id))
    flags_by_trial = _by_trial(store.flags(run_id))

    clocks = store.clocks(run_id)
    uncertainty = {c["agent"]: c["uncertainty_s"] for c in clocks}
    validity: list[Issue] = []
    trial_rows = []
    hosts: list[HostFacts] = []
    histograms: dict[int, dict[str, Histogram]] = {}  # per trial: its workloads' merged histograms
    values: Values = defaultdict(lambda: defaultdict(dict))
    trial_of: dict[tuple[str, int], int] = {}
    for trial in trials:
        idx = trial["idx"]
        facts = store.facts(run_id, idx) or _facts_from_samples(store, run_id, experiment, trial)
        hosts.append(facts["host"])
        histograms[idx] = facts["histograms"]
        kpis = facts["kpis"]
        trial_rows.append(
            {
                **{k: trial[k] for k in ("idx", "condition", "repetition", "status", "reason", "start_at", "ended")},
                "kpis": kpis,
            }
        )
        found, counts = trial_issues(experiment, trial, facts, results_by_trial[idx], flags_by_trial[idx], uncertainty)
        validity += found
        if counts:
            trial_of[(trial["condition"], trial["repetition"])] = idx
            for name, value in kpis.items():
                values[name][trial["condition"]][trial["repetition"]] = value

    baseline = experiment.baseline.name
    names = [c.name for c in experiment.conditions]
    notes = store.notes(run_id)
    side_by_side = experiment.order != "blocked"  # interleaved or random within each repetition: blocks
    capacity = None
    if experiment.search is not None:
        search = experiment.search
        capacity = capacities(search, search.sender(experiment), baseline, trial_rows, notes.get("search") or {})
        bed = calibrated_bed(store, experiment)
        if bed is not None:
            validity += bed_issues(capacity, bed["mean"], bed["run_id"])
    tiles = None
    if experiment.tiles is not None:
        tiles = tile_capacities(experiment.tiles, baseline, trial_rows, notes.get("tiles") or {})
    if experiment.searches:
        values = _at_found(values, trial_of, _found_trials(capacity or {}, tiles or {}))
        side_by_side = False  # each condition's final trials ran at its own load, in rounds of their own
    metrics = _metrics(experiment, values, names, baseline, dict.fromkeys(names, run_id if side_by_side else None))
    modelled = consolidation(experiment.profile, metrics) if experiment.profile is not None else None
    validity += condition_issues(experiment, metrics)
    if experiment.soak is None:  # a soak's segments are not repetitions: its change points say where it moved
        validity += _outlier_issues(values, trial_of)
    validity += appliance_issues(experiment, hosts)
    validity += clock_issues(experiment, clocks)
    soak = None
    if experiment.soak is not None:
        soak = soak_result(experiment, trial_rows, [r for rs in results_by_trial.values() for r in rs], histograms)
        validity += soak_issues(soak)
    environment = notes.get("environment")
    validity += version_issues(environment)
    sla = _sla_checks(experiment, metrics)
    planned = experiment.repetitions * len(experiment.conditions)
    result = {
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
        "capacity": capacity,
        "tiles": tiles,
        "consolidation": modelled,
        "soak": soak,
        "environment": environment,
        "spec": run["spec"],
        "passed": not any(v["level"] == "error" for v in validity)
        and all(s["ok"] for s in sla)
        and (soak is None or soak["passed"]),
    }
    return result, values


def _facts_from_samples(store: Store, run_id: str, experiment: Experiment, trial: TrialRecord) -> TrialFacts:
    """The facts of a trial that has none stored (a store of an older vtax, a run made by hand), from its own
    samples only: one trial in memory at a time."""
    if trial["start_at"] is None:  # its load never started
        return no_facts()
    samples = store.samples(run_id, trial["idx"])
    return trial_facts(experiment, trial["start_at"], samples, store.host_samples(run_id, trial["idx"]))


def _found_trials(capacity: dict[str, Capacity], tiles: dict[str, TileCapacity]) -> set[int]:
    """A search's trials that describe what it found: each condition's final trials at its found load, and at
    its found number of tiles."""
    return {
        tried["trial"]
        for found in capacity.values()
        for tried in found["tried"]
        if tried["final"] and tried["load"] == found["bracket"][0]
    } | {
        tried["trial"]
        for found in tiles.values()
        for tried in found["tried"]
        if tried["final"] and tried["tiles"] == found["bracket"][0]
    }


def _at_found(values: Values, trial_of: dict[tuple[str, int], int], keep: set[int]) -> Values:
    """A search's metrics come from the trials that describe what it found only: the probes ran at other loads
    (or numbers of tiles), and pooling them would describe no load at all."""
    kept: Values = defaultdict(lambda: defaultdict(dict))
    for name, by_condition in values.items():
        for condition, by_rep in by_condition.items():
            kept[name][condition] = {rep: v for rep, v in by_rep.items() if trial_of[(condition, rep)] in keep}
    return kept


def _metrics(
    experiment: Experiment, values: Values, names: list[str], baseline: str, blocks: dict[str, str | None]
) -> dict[str, MetricResult]:
    """Every measured metric of the spec's catalogue across `names` (`blocks`: see `_metric`)."""
    return {
        name: _metric(info, values[name], names, baseline, blocks)
        for name, info in metric_catalogue(experiment).items()
        if name in values
    }


def _metric(
    info: MetricInfo,
    values: dict[str, dict[int, float]],
    names: list[str],
    baseline: str,
    blocks: dict[str, str | None],
) -> MetricResult:
    """One metric across conditions: each described, each non-baseline one against the baseline, p-values also
    Holm-adjusted for the number of conditions, and all ranked. Two conditions are paired by repetition when
    they share a block group (`blocks`: the run whose repetitions ran side by side; None: not blocked)."""

    def blocked(a: str, b: str) -> bool:
        return blocks[a] is not None and blocks[a] == blocks[b]

    overheads = {
        c: stats.compare(values[baseline], values[c], blocked_by_repetition=blocked(baseline, c))
        for c in names
        if c != baseline
    }
    for over, adjusted in zip(overheads.values(), stats.holm([o["p_value"] for o in overheads.values()]), strict=True):
        over["p_adjusted"] = adjusted
    ranked, pairwise = stats.ranking({c: values[c] for c in names}, better=info.better, blocked=blocked)
    return {
        "unit": info.unit,
        "better": info.better,
        "description": info.description,
        "by_condition": {c: stats.describe(list(values[c].values())) for c in names},
        "overhead": overheads,
        "ranking": ranked,
        "pairwise": pairwise,
    }


def _outlier_issues(values: Values, trial_of: dict[tuple[str, int], int]) -> list[Issue]:
    """One warning per trial whose KPIs lie further from their condition's median than normal noise would put
    them (`stats.outliers`), naming each such metric; the trial still counts."""
    found: defaultdict[tuple[str, int], list[str]] = defaultdict(list)
    for name, by_condition in values.items():
        for condition, by_repetition in by_condition.items():
            for repetition, distance in stats.outliers(by_repetition).items():
                found[(condition, repetition)].append(
                    f"{name} {by_repetition[repetition]:.4g} ({distance:.0f} MADs from the median)"
                )
    return [
        issue(
            "warning",
            "outlier",
            f"{condition} #{repetition} is an outlier in {', '.join(metrics)}: further than noise like the other "
            "repetitions' would put it (1 time in 100); it still counts, look at that trial",
            trial_of[(condition, repetition)],
        )
        for (condition, repetition), metrics in found.items()
    ]


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


def check_comparable(results: list[dict[str, Any]]) -> None:
    """Runs can be one study only when their specs agree on the workloads and the timing."""
    first = results[0]["spec"]
    for other in results[1:]:
        for key in ("workloads", "timing"):
            if other["spec"][key] != first[key]:
                raise InputError(
                    f"runs {results[0]['run_id']} and {other['run_id']} differ in their spec's `{key}`: they measure "
                    "different things and cannot be compared as one study (`vtax compare A B` shows how they differ)"
                )


def analyse_study(store: Store, run_ids: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Several runs of one spec as one study, and each run's own result. The study's conditions are every run's
    conditions (a name a former run already used gets " (run N)"), its baseline the first run's; two conditions
    are paired only within one run whose repetitions ran side by side, Welch across runs (different days share
    no block). Trials and validity findings carry their `run_id`; a single run is its own study."""
    analysed = [analyse_values(store, run_id) for run_id in run_ids]
    results = [result for result, _ in analysed]
    check_comparable(results)
    if len(results) == 1:
        return results[0], results
    labels: dict[tuple[str, str], str] = {}  # (run, condition) → its name in the study
    blocks: dict[str, str | None] = {}
    merged: Values = defaultdict(lambda: defaultdict(dict))
    for number, (result, values) in enumerate(analysed, 1):
        side_by_side = Experiment.model_validate(result["spec"]).order != "blocked"
        for condition in result["conditions"]:
            label = condition if condition not in blocks else f"{condition} (run {number})"
            labels[(result["run_id"], condition)] = label
            blocks[label] = result["run_id"] if side_by_side else None
        for name, by_condition in values.items():
            for condition, by_repetition in by_condition.items():
                merged[name][labels[(result["run_id"], condition)]] = dict(by_repetition)
    first = results[0]
    experiment = Experiment.model_validate(first["spec"])
    names = list(blocks)
    metrics = _metrics(experiment, merged, names, first["baseline"], blocks)
    study = {
        **first,
        "conditions": names,
        "runs": [
            {
                "run_id": r["run_id"],
                "created": r["created"],
                "conditions": {labels[(r["run_id"], c)]: c for c in r["conditions"]},
            }
            for r in results
        ],
        "trials": [
            {**t, "run_id": r["run_id"], "condition": labels[(r["run_id"], t["condition"])]}
            for r in results
            for t in r["trials"]
        ],
        "validity": [{**v, "run_id": r["run_id"]} for r in results for v in r["validity"]],
        "metrics": metrics,
        "sla": _sla_checks(experiment, metrics),
    }
    study["passed"] = not any(v["level"] == "error" for v in study["validity"]) and all(s["ok"] for s in study["sla"])
    return study, results
