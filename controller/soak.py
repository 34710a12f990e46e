"""A soak's verdicts: each metric's trend and change points over its segments, per condition, each agent's
memory growth, the gaps in the load, and the spec's checks on them. Pure: it reads what the analysis has
already computed per trial (each segment is a trial), and returns the JSON's `soak` object."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypedDict

import workloads
from controller.metrics import MEMORY_METRICS
from controller.spec import Experiment, SoakSpec, metric_catalogue
from controller.store import StoredResult
from controller.validity import Issue, issue
from workloads.histogram import Histogram, merge

if TYPE_CHECKING:  # controller.drift imports scipy.stats (1.6 s): only a soak's analysis loads it
    from controller.drift import ChangePoint, Growth, Trend

GAP_LIMIT_S = 1.0  # the load may pause this long between two segments of one condition's turn


class MetricDrift(TypedDict):
    unit: str
    segments: list[int]  # the trials (segments) this condition's values come from, in order
    hours: list[float]  # each segment's start, in hours from the soak's start
    values: list[float]
    trend: Trend
    change_points: list[ChangePoint]  # `segment` is the trial (segment) number where the new level begins


class SoakCheck(TypedDict):
    check: str  # max_trend_pct_per_h, max_step_pct, max_memory_ratio, sla_window_min, sla_window_max
    subject: str  # the metric and condition, or the agent
    limit: float
    value: float
    ok: bool
    message: str


class SoakResult(TypedDict):
    duration_s: float
    segment_s: float
    segments_planned: int
    segments_measured: int
    gaps: list[dict[str, float]]  # {after: segment, seconds}: pauses in one turn's load longer than GAP_LIMIT_S
    metrics: dict[str, dict[str, MetricDrift]]  # metric → condition → its drift
    memory: dict[str, Growth]  # agent → its process's resident memory (MB) over the segments
    host_memory: dict[str, Growth]  # memory metric (controller.metrics.MEMORY_METRICS) → its growth over them
    checks: list[SoakCheck]
    passed: bool


def soak_result(
    experiment: Experiment,
    trials: list[dict[str, Any]],
    results: Iterable[StoredResult],
    histograms: dict[int, dict[str, Histogram]],
) -> SoakResult:
    """`trials` are the analysis's trial rows (idx, condition, status, start_at, kpis), in order; `histograms`
    each trial's workloads' merged histograms (they give a window's percentiles)."""
    from controller.drift import change_points, trend

    soak = experiment.soak
    assert soak is not None
    measured = [t for t in trials if t["status"] == "ok" and t["start_at"] is not None]
    origin = min((t["start_at"] for t in measured), default=0.0)
    start_of = {t["idx"]: t["start_at"] for t in measured}
    units = metric_catalogue(experiment)
    metrics: dict[str, dict[str, MetricDrift]] = defaultdict(dict)
    names = sorted({name for t in measured for name in t["kpis"]})
    conditions = list(dict.fromkeys(t["condition"] for t in measured))  # in the order they first ran
    for name in names:
        for condition in conditions:
            rows = [t for t in measured if t["condition"] == condition and name in t["kpis"]]
            values = [float(t["kpis"][name]) for t in rows]
            hours = [(t["start_at"] - origin) / 3600 for t in rows]
            info = units.get(name)
            metrics[name][condition] = {
                "unit": info.unit if info is not None else "",
                "segments": [t["idx"] for t in rows],
                "hours": hours,
                "values": values,
                "trend": trend(values, hours),
                "change_points": [
                    {**found, "segment": rows[found["segment"]]["idx"]} for found in change_points(values)
                ],
            }
    memory = _memory(results, start_of, origin)
    host_memory = _host_memory(measured, origin)
    grown = {f"agent {agent}": found for agent, found in memory.items()} | host_memory
    checks = _checks(soak, metrics, grown) + _window_checks(experiment, measured, conditions, histograms, origin)
    return {
        "duration_s": soak.duration,
        "segment_s": soak.segment,
        "segments_planned": soak.segments,
        "segments_measured": len(measured),
        "gaps": _gaps(trials, soak.segment),
        "metrics": dict(metrics),
        "memory": memory,
        "host_memory": host_memory,
        "checks": checks,
        "passed": all(c["ok"] for c in checks),
    }


def _memory(results: Iterable[StoredResult], start_of: dict[int, float], origin: float) -> dict[str, Growth]:
    """Each agent's memory as its segments ended (its largest reading of a segment, over its tasks)."""
    from controller.drift import growth

    by_agent: defaultdict[str, dict[int, float]] = defaultdict(dict)
    for result in results:
        rss, idx = result.get("agent_rss_mb"), result["trial_idx"]
        if rss is not None and idx in start_of:
            by_agent[result["agent"]][idx] = max(rss, by_agent[result["agent"]].get(idx, 0.0))
    grown = {}
    for agent, readings in sorted(by_agent.items()):
        order = sorted(readings)
        grown[agent] = growth([readings[i] for i in order], [(start_of[i] - origin) / 3600 for i in order])
    return grown


def _host_memory(measured: list[dict[str, Any]], origin: float) -> dict[str, Growth]:
    """The hosts' and the appliance's memory over every segment, whatever condition held: a leak grows
    across turns."""
    from controller.drift import growth

    grown = {}
    for name in MEMORY_METRICS:
        rows = [t for t in measured if name in t["kpis"]]
        if rows:
            grown[name] = growth([t["kpis"][name] for t in rows], [(t["start_at"] - origin) / 3600 for t in rows])
    return grown


def _gaps(trials: list[dict[str, Any]], segment_s: float) -> list[dict[str, float]]:
    """Pauses between consecutive segments of one condition's turn: a later start than the last one's end."""
    gaps = []
    for before, after in itertools.pairwise(trials):
        if before["condition"] != after["condition"] or before["start_at"] is None or after["start_at"] is None:
            continue
        pause = after["start_at"] - (before["start_at"] + segment_s)
        if pause > GAP_LIMIT_S:
            gaps.append({"after": before["idx"], "seconds": pause})
    return gaps


def _checks(soak: SoakSpec, metrics: dict[str, dict[str, MetricDrift]], memory: dict[str, Growth]) -> list[SoakCheck]:
    """The spec's checks on the trends, the change points and `memory` (by subject: "agent a", or a memory
    metric)."""
    limits = soak.checks
    checks: list[SoakCheck] = []
    for name, by_condition in metrics.items():
        for condition, drift in by_condition.items():
            subject = f"{name} ({condition})"
            found = drift["trend"]
            if limits.max_trend_pct_per_h is not None and found["pct_per_h"] is not None:
                value = abs(found["pct_per_h"]) if found["verdict"] in ("increasing", "decreasing") else 0.0
                checks.append(
                    {
                        "check": "max_trend_pct_per_h",
                        "subject": subject,
                        "limit": limits.max_trend_pct_per_h,
                        "value": value,
                        "ok": value <= limits.max_trend_pct_per_h,
                        "message": f"{subject} trends {found['pct_per_h']:+.2f} %/h (p = {found['p_value']:.2g})",
                    }
                )
            if limits.max_step_pct is not None:
                steps = [abs(c["pct"]) for c in drift["change_points"] if c["pct"] is not None]
                value = max(steps, default=0.0)
                checks.append(
                    {
                        "check": "max_step_pct",
                        "subject": subject,
                        "limit": limits.max_step_pct,
                        "value": value,
                        "ok": value <= limits.max_step_pct,
                        "message": f"{subject}: largest level change {value:.1f} %",
                    }
                )
    for subject, grown in memory.items():
        if grown["ratio"] is not None:
            checks.append(
                {
                    "check": "max_memory_ratio",
                    "subject": subject,
                    "limit": limits.max_memory_ratio,
                    "value": grown["ratio"],
                    "ok": grown["ratio"] <= limits.max_memory_ratio,
                    "message": f"{subject} memory {grown['first_hour']:.0f} → {grown['end']:.0f} MB "
                    f"({grown['slope_per_h']:+.1f} MB/h)",
                }
            )
    return checks


def _window_checks(
    experiment: Experiment,
    measured: list[dict[str, Any]],
    conditions: list[str],
    histograms: dict[int, dict[str, Histogram]],
    origin: float,
) -> list[SoakCheck]:
    """SLA rules with a `window`: their min and max held by each window of segments (of each condition), the
    windows counted from the soak's start. A window's percentile comes from its segments' histograms merged,
    any other metric is the mean of its segments' values (they are equally long)."""
    checks: list[SoakCheck] = []
    for name, rule in experiment.sla.items():
        if rule.window is None:
            continue
        window = rule.window
        for condition in conditions:
            grouped: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
            for t in measured:
                if t["condition"] == condition and name in t["kpis"]:
                    grouped[int((t["start_at"] - origin) // window)].append(t)
            if not grouped:
                continue
            values = {k: _window_value(experiment, name, rows, histograms) for k, rows in grouped.items()}
            subject = f"{name} ({condition})"
            for kind, limit in (("min", rule.min), ("max", rule.max)):
                if limit is None:
                    continue
                failing = [k for k, v in values.items() if (v < limit if kind == "min" else v > limit)]
                worst = (min if kind == "min" else max)(values, key=values.__getitem__)
                checks.append(
                    {
                        "check": f"sla_window_{kind}",
                        "subject": subject,
                        "limit": limit,
                        "value": values[worst],
                        "ok": not failing,
                        "message": f"{subject} {kind} {limit:g} in every {_span(window)} window: "
                        f"{len(failing)} of {len(values)} fail; worst {values[worst]:.4g} from hour "
                        f"{worst * window / 3600:.2f}",
                    }
                )
    return checks


def _window_value(
    experiment: Experiment, name: str, rows: list[dict[str, Any]], histograms: dict[int, dict[str, Histogram]]
) -> float:
    label, _, field = name.partition(".")
    kind = next((w.kind for w in experiment.workloads if w.label == label), None)
    from_histogram = getattr(workloads.get(kind), "histogram_kpis", None) if kind is not None else None
    if from_histogram is not None:
        merged = merge(histograms.get(t["idx"], {}).get(label, {}) for t in rows)
        value = from_histogram(merged).get(field)
        if value is not None:
            return value
    return sum(float(t["kpis"][name]) for t in rows) / len(rows)


def _span(seconds: float) -> str:
    """30 min, 2 h: a window's length as the message says it."""
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:g} s"


def soak_issues(result: SoakResult) -> list[Issue]:
    """Validity findings: segments lost, and pauses in the load longer than GAP_LIMIT_S."""
    found = [
        issue("warning", "soak_gap", f"the load paused {gap['seconds']:.1f} s after segment {int(gap['after'])}")
        for gap in result["gaps"]
    ]
    missing = result["segments_planned"] - result["segments_measured"]
    if missing:
        found.append(
            issue(
                "warning", "soak_segments_missing", f"{missing} of {result['segments_planned']} segments not measured"
            )
        )
    return found
