"""A trial's facts: all that the analysis needs from the trial's raw seconds, computed once as the trial ends.

The store keeps them beside the samples (`Store.put_facts`), so the analysis of a day-long soak reads 1,440
small records instead of 8.64 M samples; a trial without stored facts (a store of an older vtax, a run made by
hand) has them computed from its samples, one trial at a time. Both ways give the same result (a test checks).

Besides the KPIs they hold each agent's steady-phase aggregates per field (mean, min, max), each workload's
merged latency histogram (so a window of segments gets exact percentiles by merging them) and what the validity
checks look at: how much of the steady phase each agent's samples cover, and the host counters' coverage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from agent.wire import HostSample
from controller.kpis import in_steady, steady_window, trial_kpis
from controller.spec import Experiment
from controller.store import Aggregate, HostFacts, SourceFacts, StoredSample, TrialFacts
from workloads.base import Sample
from workloads.histogram import merge


def trial_facts(
    experiment: Experiment, start_at: float, samples: Sequence[StoredSample], host: Sequence[HostSample]
) -> TrialFacts:
    """The facts of one trial that started at `start_at`, from its workload samples (each naming its agent and
    workload) and host counter samples."""
    start, end = steady_window(experiment, start_at)
    by_source: defaultdict[tuple[str, str], list[Sample]] = defaultdict(list)
    for sample in samples:
        by_source[(sample["agent"], sample["workload"])].append(sample)
    sources: list[SourceFacts] = []
    steady_by_workload: defaultdict[str, list[Sample]] = defaultdict(list)
    for (agent, workload), own in sorted(by_source.items()):
        steady = [s for s in own if in_steady(s, start, end)]
        steady_by_workload[workload] += steady
        sources.append(
            {
                "agent": agent,
                "workload": workload,
                "covered_s": coverage(own, start, end),
                "cpu_warning": any(s["values"].get("cpu_warning") for s in steady),
                "fields": _aggregates(steady),
            }
        )
    histograms = {
        workload: merge(s["histogram"] for s in steady if "histogram" in s)
        for workload, steady in steady_by_workload.items()
        if any("histogram" in s for s in steady)
    }
    return {
        "kpis": trial_kpis(experiment, start_at, samples, host),
        "sources": sources,
        "histograms": histograms,
        "host": _host_facts(host, start, end),
    }


def no_facts() -> TrialFacts:
    """The facts of a trial whose load never started."""
    return {"kpis": {}, "sources": [], "histograms": {}, "host": {"coarsest_s": 0.0, "steady_s": {}, "appliance": {}}}


def coverage(samples: Sequence[Sample], start: float, end: float) -> float:
    """Seconds of [start, end) that the samples' intervals cover (overlaps counted once)."""
    covered, reached = 0.0, start
    for t0, t1 in sorted((max(s["t"], start), min(s["t"] + s["dt"], end)) for s in samples):
        if t1 > reached:
            covered += t1 - max(t0, reached)
            reached = t1
    return covered


def _aggregates(steady: list[Sample]) -> dict[str, Aggregate]:
    values: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
    for sample in steady:
        for name, value in sample["values"].items():
            values[name].append((value, sample["dt"]))
    return {
        name: {
            "mean": sum(v * dt for v, dt in pairs) / max(sum(dt for _, dt in pairs), 1e-9),
            "min": min(v for v, _ in pairs),
            "max": max(v for v, _ in pairs),
        }
        for name, pairs in values.items()
    }


def _host_facts(host: Sequence[HostSample], start: float, end: float) -> HostFacts:
    steady_s: defaultdict[str, float] = defaultdict(float)
    appliance: dict[str, bool] = {}
    for sample in host:
        agent = sample.get("agent")
        if agent is None:
            continue
        if in_steady(sample, start, end):
            steady_s[agent] += sample["dt"]
        found = sample.get("appliance")
        if found is not None:
            appliance[agent] = appliance.get(agent, False) or bool(found["processes"])
    return {"coarsest_s": max((s["dt"] for s in host), default=0.0), "steady_s": dict(steady_s), "appliance": appliance}
