"""vtax's InfluxDB schema: the measurements, tags and fields every writer uses (documented in docs/how-to/influxdb.md).

- vtax_sample   one workload sample: tags run, trial, condition, repetition, phase, agent, host, zone,
                workload, kind, role; one float field per sample value, plus latency_p50_ms/p99_ms
                of that second where the sample has a histogram
- vtax_live     a running workload's provisional reading (what the live display shows), once a second, with
                the tags of vtax_sample: live even where samples come late (iperf3 before 3.17 reports its
                intervals only when it exits)
- vtax_host     one second of host counters (cpu_pct, softirq_pct, ctx_switches_per_s, and
                appliance_host_cpu_pct where measured): tags run, trial, condition, repetition, phase, host;
                written by the controller for its own machine, by hypervisor agents for theirs
- vtax_host_net the same per interface: tag iface
- vtax_trial    trial start/end markers for annotations: tags run, trial, condition, repetition, event;
                fields status, title
- vtax_kpi      a run's final KPIs: tags run, metric, condition, unit; fields mean, ci95_low, ci95_high, n,
                and for non-baseline conditions overhead_pct, overhead_ci95_low/high, p_value
- vtax_segment  a soak's segment KPIs, at the segment's start: tags run, condition, metric; fields value, trial
- vtax_soak     a soak's drift verdicts for annotations, at the segment where each starts: tags run, metric,
                condition, kind (change_point, trend); field title
Timestamps are microseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workloads import histogram

if TYPE_CHECKING:
    from influxdb_client import Point


def phase_of(t: float, dt: float, *, start_at: float, warmup: float, steady: float) -> str:
    middle = t + dt / 2 - start_at
    if middle < warmup:
        return "warmup"
    return "steady" if middle < warmup + steady else "cooldown"


def _point(measurement: str, tags: dict[str, Any], t: float) -> Point:
    # imported here: influxdb_client costs 0.4 s to import, and every agent and controller imports this module,
    # but only those writing to InfluxDB build lines
    from influxdb_client import Point, WritePrecision

    point = Point(measurement).time(round(t * 1_000_000), WritePrecision.US)
    for key, value in tags.items():
        if value is not None and value != "":
            point.tag(key, str(value))
    return point


def sample_line(sample: dict[str, Any], tags: dict[str, Any], phase: str) -> str:
    point = _point("vtax_sample", {**tags, "phase": phase}, sample["t"])
    for field, value in sample["values"].items():
        point.field(field, float(value))
    if sample.get("histogram"):
        point.field("latency_p50_ms", histogram.percentile(sample["histogram"], 50))
        point.field("latency_p99_ms", histogram.percentile(sample["histogram"], 99))
    return point.to_line_protocol()


def live_line(values: dict[str, float], tags: dict[str, Any], t: float, phase: str) -> str:
    point = _point("vtax_live", {**tags, "phase": phase}, t)
    for field, value in values.items():
        point.field(field, float(value))
    return point.to_line_protocol()


def host_lines(sample: dict[str, Any], tags: dict[str, Any], phase: str) -> list[str]:
    base = {**tags, "phase": phase}
    point = _point("vtax_host", base, sample["t"])
    for field, value in sample["values"].items():
        point.field(field.removeprefix("host.").replace(".", "_"), float(value))
    lines = [point.to_line_protocol()]
    for iface, counters in sample.get("net", {}).items():
        net = _point("vtax_host_net", {**base, "iface": iface}, sample["t"])
        for field, value in counters.items():
            net.field(field, float(value))
        lines.append(net.to_line_protocol())
    return lines


def marker_line(tags: dict[str, Any], *, event: str, t: float, status: str) -> str:
    point = _point("vtax_trial", {**tags, "event": event}, t)
    title = f"{tags.get('condition')} #{tags.get('repetition')} {event}"
    return point.field("status", status).field("title", title).to_line_protocol()


def kpi_lines(result: dict[str, Any], t: float) -> list[str]:
    lines = []
    for metric, info in result["metrics"].items():
        for condition, described in info["by_condition"].items():
            if described["mean"] is None:
                continue
            point = _point(
                "vtax_kpi", {"run": result["run_id"], "metric": metric, "condition": condition, "unit": info["unit"]}, t
            )
            point.field("mean", float(described["mean"])).field("n", int(described["n"]))
            if described["ci95"]:
                point.field("ci95_low", float(described["ci95"][0])).field("ci95_high", float(described["ci95"][1]))
            over = info["overhead"].get(condition)
            if over and over["pct"] is not None:
                point.field("overhead_pct", float(over["pct"]))
                if over["ci95_pct"]:
                    point.field("overhead_ci95_low", float(over["ci95_pct"][0]))
                    point.field("overhead_ci95_high", float(over["ci95_pct"][1]))
                if over["p_value"] is not None:
                    point.field("p_value", float(over["p_value"]))
            lines.append(point.to_line_protocol())
    return lines


def segment_lines(tags: dict[str, Any], kpis: dict[str, float], t: float) -> list[str]:
    """One soak segment's KPIs (its trial's), each a point at the segment's start."""
    base = {"run": tags["run"], "condition": tags["condition"]}
    return [
        _point("vtax_segment", {**base, "metric": metric}, t).field("value", float(value)).field("trial", tags["trial"])
        .to_line_protocol()
        for metric, value in kpis.items()
    ]  # fmt: skip


def soak_lines(result: dict[str, Any]) -> list[str]:
    """A soak's change points, at the segment where each new level starts, and its significant trends, at its
    first segment: Grafana's annotations of the soak row."""
    soak, lines = result["soak"], []
    starts = {t["idx"]: t["start_at"] for t in result["trials"] if t["start_at"] is not None}
    for metric, by_condition in soak["metrics"].items():
        for condition, drift in by_condition.items():
            tags = {"run": result["run_id"], "metric": metric, "condition": condition}
            for found in drift["change_points"]:
                change = f" ({found['pct']:+.0f} %)" if found["pct"] is not None else ""
                title = f"{metric} ({condition}): {found['before']:.4g} → {found['after']:.4g}{change}"
                point = _point("vtax_soak", {**tags, "kind": "change_point"}, starts[found["segment"]])
                lines.append(point.field("title", title).to_line_protocol())
            trend = drift["trend"]
            if trend["verdict"] in ("increasing", "decreasing") and drift["segments"]:
                rate = f"{trend['pct_per_h']:+.2f} %/h" if trend["pct_per_h"] is not None else "from 0"
                title = f"{metric} ({condition}) {trend['verdict']} {rate} (p = {trend['p_value']:.2g})"
                point = _point("vtax_soak", {**tags, "kind": "trend"}, starts[drift["segments"][0]])
                lines.append(point.field("title", title).to_line_protocol())
    return lines
