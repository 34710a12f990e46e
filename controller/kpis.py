"""Per-trial KPIs: each metric's value over a trial's steady phase, from the samples and host counters.

Workload samples are combined across agents per second (sum or mean, as the metric says), then averaged over
the steady seconds; host counters are weighted by how much of each sample lies in the steady phase, per host,
then the hosts are combined. Warm-up and cool-down never count.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import workloads
from agent.wire import HostSample
from controller.spec import Experiment, metric_catalogue
from controller.store import StoredSample
from workloads.base import MetricInfo, Sample, combine


def steady_window(experiment: Experiment, start_at: float) -> tuple[float, float]:
    """The steady phase of a trial that started at `start_at`: [start, end)."""
    start = start_at + experiment.timing.warmup
    return start, start + experiment.timing.steady


def in_steady(sample: Sample | HostSample, start: float, end: float) -> bool:
    """Whether a sample's middle lies in the steady phase [start, end)."""
    middle = sample["t"] + sample["dt"] / 2
    return start <= middle < end


def trial_kpis(
    experiment: Experiment, start_at: float, samples: Sequence[StoredSample], host: Sequence[HostSample]
) -> dict[str, float]:
    """Steady-phase KPIs of one trial that started at `start_at`: for each metric, agents combined per
    second, then averaged."""
    start, end = steady_window(experiment, start_at)
    catalogue = metric_catalogue(experiment)
    # metric → second → agent → (value × dt, dt): one agent's samples that share a second (a series offset from
    # the start, and its last partial interval) are its mean over them, weighted by their length; only
    # different agents' values are then summed or averaged, as the metric says
    per_second: dict[str, dict[int, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    )
    for sample in samples:
        if not in_steady(sample, start, end):
            continue
        second = math.floor(sample["t"] + sample["dt"] / 2 - start_at)
        for field, value in sample["values"].items():
            weighted = per_second[f"{sample['workload']}.{field}"][second][sample["agent"]]
            weighted[0] += value * sample["dt"]
            weighted[1] += sample["dt"]
    combined: dict[str, list[float]] = {}
    for name, seconds in per_second.items():
        combined[name] = [
            combine(catalogue.get(name), [total / max(dt, 1e-9) for total, dt in seconds[second].values()])
            for second in sorted(seconds)
        ]
    kpis = {name: sum(values) / len(values) for name, values in combined.items()}
    kpis |= host_kpis(host, start, end, catalogue)
    for entry in experiment.workloads:
        hook = getattr(workloads.get(entry.kind), "trial_kpis", None)
        if hook is not None:
            prefix = f"{entry.label}."
            steady = [s for s in samples if s["workload"] == entry.label and in_steady(s, start, end)]
            fields = {name.removeprefix(prefix): values for name, values in combined.items() if name.startswith(prefix)}
            kpis |= {prefix + name: value for name, value in hook(steady, fields).items()}
    throughput = sum(v for k, v in kpis.items() if k.endswith(".throughput_gbps"))
    if "host.cpu_pct" in kpis and throughput > 0:
        kpis["host.cpu_per_gbps"] = kpis["host.cpu_pct"] / throughput
    return {name: value for name, value in kpis.items() if name in catalogue}  # internal fields stay internal


def host_kpis(
    host: Sequence[HostSample], start: float, end: float, catalogue: dict[str, MetricInfo]
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
