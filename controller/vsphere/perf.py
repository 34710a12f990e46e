"""vSphere performance counters: looked up by name, queried in batches, converted to honest units.

Counter ids differ between servers, so every counter is found by `group.name.rollup` in the server's
catalogue. Queries ask for many entities per QueryPerf call, staying within vCenter's maxQueryMetrics,
in CSV format (a fraction of the XML to parse), a few calls at a time. Realtime data (20 s samples on
vCenter; the server's refresh rate) is kept about an hour; older windows, or entities without realtime
data, are read from the 300 s historical interval, and the caller is told.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim, vmodl

from controller.vsphere.connection import Vcenter, VcenterError, describe_fault

log = logging.getLogger("vtax.vsphere")

# the counters vtax reads, for hosts and VMs alike (a server lacking one for a kind simply omits it)
COUNTERS = (
    "cpu.usage.average",
    "cpu.usagemhz.average",
    "cpu.ready.summation",
    "cpu.costop.summation",
    "cpu.latency.average",
    "mem.usage.average",
    "mem.active.average",
    "net.received.average",
    "net.transmitted.average",
    "net.packetsRx.summation",
    "net.packetsTx.summation",
    "net.droppedRx.summation",
    "net.droppedTx.summation",
)
# where one instance tells more than the aggregate: a host's busiest core (one saturated packet-processing core
# hides in a host average); "*" reads every instance and the aggregate ("")
PER_INSTANCE = {"HostSystem": {"cpu.usage.average"}}
REALTIME_INTERVAL_S = 20  # vCenter's realtime sample length (a server may say otherwise: refresh_rate)
REALTIME_RETENTION_S = 3600.0  # what vCenter keeps of realtime samples
HISTORICAL_INTERVAL_S = 300
DEFAULT_MAX_QUERY_METRICS = 64  # vCenter's limit when config.vpxd.stats.maxQueryMetrics is not set
QUERY_THREADS = 4


@dataclass(frozen=True)
class Counter:
    key: int
    name: str  # group.name.rollup
    unit: str  # the server's unit key: percent, millisecond, number, kiloBytesPerSecond, ...
    rollup: str


@dataclass
class PerfSample:
    """One value of one counter of one entity: the interval (t - dt, t] in the controller's clock."""

    entity: str  # moid
    counter: str
    instance: str
    t: float
    dt: float
    raw: float
    value: float
    unit: str


def convert(counter: Counter, raw: float, interval_s: float) -> tuple[float, str]:
    """A raw counter value in a unit people read: %, MHz, MiB, Mbit/s or per second.

    Summation counters hold a total over the sample's interval: ready/costop milliseconds become the
    percent of the interval spent waiting (1,000 ms in a 20 s sample = 5 %), packet counts become rates.
    """
    if counter.unit == "percent":
        return raw / 100.0, "%"  # vSphere sends hundredths of a percent
    if counter.unit == "millisecond" and counter.rollup == "summation":
        return 100.0 * raw / (1000.0 * interval_s), "%"
    if counter.unit == "number" and counter.rollup == "summation":
        return raw / interval_s, "1/s"
    if counter.unit == "kiloBytesPerSecond":
        return raw * 1024 * 8 / 1e6, "Mbit/s"
    if counter.unit == "kiloBytes":
        return raw / 1024.0, "MiB"
    if counter.unit == "megaHertz":
        return raw, "MHz"
    return raw, counter.unit


def _catalogue(vcenter: Vcenter) -> dict[str, Counter]:
    found = {}
    for info in vcenter.content.perfManager.perfCounter:
        name = f"{info.groupInfo.key}.{info.nameInfo.key}.{info.rollupType}"
        found[name] = Counter(key=info.key, name=name, unit=info.unitInfo.key, rollup=str(info.rollupType))
    return found


def _kind(entity: Any) -> str:
    """HostSystem, VirtualMachine, ...: the managed object's type without pyVmomi's `vim.` prefix."""
    return type(entity).__name__.rsplit(".", 1)[-1]


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class PerfReader:
    """Reads counters of many entities for a time window; one per run, reused for every trial."""

    def __init__(self, *, vcenter: Vcenter, counters: Iterable[str] = COUNTERS, threads: int = QUERY_THREADS) -> None:
        self.vcenter = vcenter
        self.manager = vcenter.content.perfManager
        catalogue = _catalogue(vcenter)
        missing = [name for name in counters if name not in catalogue]
        if missing:
            log.warning("vCenter has no counter(s) %s; they are not collected", ", ".join(missing))
        self.counters = [catalogue[name] for name in counters if name in catalogue]
        self._by_key = {c.key: c for c in self.counters}
        limit = vcenter.option("config.vpxd.stats.maxQueryMetrics")
        if vcenter.content.about.apiType == "HostAgent":
            self.max_metrics = 0  # ESXi itself has no such limit
        else:
            self.max_metrics = max(0, int(limit)) if limit not in (None, "") else DEFAULT_MAX_QUERY_METRICS  # -1: none
        self.threads = threads
        self._refresh: dict[str, int | None] = {}
        self._available: dict[tuple[str, int], set[int]] = {}
        self.offset_s = vcenter.now() - datetime.now(UTC).timestamp()  # server clock minus ours

    def refresh_rate(self, entity: Any) -> int | None:
        """The realtime interval (s) of this entity's kind, or None where there is no realtime data."""
        kind = _kind(entity)
        if kind not in self._refresh:
            summary = self.manager.QueryPerfProviderSummary(entity=entity)
            self._refresh[kind] = summary.refreshRate if summary.currentSupported else None
        return self._refresh[kind]

    def _metric_ids(self, entity: Any, interval: int) -> list[Any]:
        """The counters this kind of entity has at this interval: asked once per kind, of an entity that has
        some (a powered-off VM has no realtime counters, and must not stand for the others)."""
        kind = (_kind(entity), interval)
        keys = self._available.get(kind)
        if keys is None:
            keys = {m.counterId for m in self.manager.QueryAvailablePerfMetric(entity=entity, intervalId=interval)}
            if keys:
                self._available[kind] = keys
        per_instance = PER_INSTANCE.get(_kind(entity), set())
        return [
            vim.PerformanceManager.MetricId(counterId=c.key, instance="*" if c.name in per_instance else "")
            for c in self.counters
            if c.key in keys
        ]

    def interval_for(self, entity: Any, start: float, now: float | None = None) -> tuple[int, str | None]:
        """The interval to read a window starting at `start` with, and why it is not realtime (if it is not)."""
        refresh = self.refresh_rate(entity)
        now = datetime.now(UTC).timestamp() if now is None else now
        if refresh is None:
            return HISTORICAL_INTERVAL_S, f"{_kind(entity)} has no realtime data on this server"
        if start < now - REALTIME_RETENTION_S + refresh:
            return HISTORICAL_INTERVAL_S, (
                "the window has aged out of vCenter's realtime retention (about an hour): "
                f"read at {HISTORICAL_INTERVAL_S} s resolution"
            )
        return refresh, None

    def read(self, entities: list[Any], *, start: float, end: float, interval: int) -> list[PerfSample]:
        """Every counter of every entity for (start, end] (controller clock), in as few calls as allowed."""
        specs = []
        server_start = datetime.fromtimestamp(start + self.offset_s, UTC)
        server_end = datetime.fromtimestamp(end + self.offset_s, UTC)
        for entity in entities:
            ids = self._metric_ids(entity, interval)
            step = self.max_metrics or len(ids) or 1
            for first in range(0, len(ids), step):  # an entity with more counters than one call may hold is split
                specs.append(
                    vim.PerformanceManager.QuerySpec(
                        entity=entity,
                        metricId=ids[first : first + step],
                        intervalId=interval,
                        startTime=server_start,
                        endTime=server_end,
                        format="csv",
                    )
                )
        batches: list[list[Any]] = []
        size = 0
        for spec in specs:
            if not batches or (self.max_metrics and size + len(spec.metricId) > self.max_metrics):
                batches.append([])
                size = 0
            batches[-1].append(spec)
            size += len(spec.metricId)
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            answers = list(pool.map(self._query, batches))
        return [sample for answer in answers for metric in answer for sample in self._samples(metric)]

    def _query(self, batch: list[Any]) -> list[Any]:
        try:
            return self.manager.QueryPerf(querySpec=batch) or []
        except vim.fault.NotAuthenticated:
            raise  # the caller logs in again (Vcenter.retry)
        except (vmodl.MethodFault, OSError) as exc:
            raise VcenterError(f"vCenter QueryPerf failed: {describe_fault(exc)}") from None

    def _samples(self, metric: Any) -> list[PerfSample]:
        """Both answer formats: CSV (asked for) and the normal one (servers that ignore the format)."""
        if isinstance(metric, vim.PerformanceManager.EntityMetricCSV):
            info = metric.sampleInfoCSV.split(",") if metric.sampleInfoCSV else []
            stamps = [(int(info[i]), _timestamp(info[i + 1])) for i in range(0, len(info) - 1, 2)]
            series = [(s.id, [float(v) if v else -1.0 for v in s.value.split(",")]) for s in metric.value or []]
        else:
            stamps = [(s.interval, s.timestamp.timestamp()) for s in metric.sampleInfo or []]
            series = [(s.id, [float(v) for v in s.value]) for s in metric.value or []]
        samples = []
        for metric_id, values in series:
            counter = self._by_key.get(metric_id.counterId)
            if counter is None:
                continue
            for (interval, stamp), raw in zip(stamps, values, strict=False):
                if raw < 0:  # -1: no data for this sample
                    continue
                value, unit = convert(counter, raw, interval)
                samples.append(
                    PerfSample(
                        entity=metric.entity._moId,
                        counter=counter.name,
                        instance=metric_id.instance or "",
                        t=stamp - self.offset_s,
                        dt=float(interval),
                        raw=raw,
                        value=value,
                        unit=unit,
                    )
                )
        return samples
