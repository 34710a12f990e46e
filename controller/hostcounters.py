"""Host counters of the local Linux host, once a second, aligned to the trial's start.

CPU % (total and per core, with softirq), context switches, per-interface bytes/packets/drops. In the
embedded engine this host is the hypervisor: every agent and appliance shares its CPUs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from workloads.base import MetricInfo

HOST_METRICS: dict[str, MetricInfo] = {
    "host.cpu_pct": MetricInfo(unit="%", across_agents="mean", better="lower", description="busy CPU, all cores"),
    "host.softirq_pct": MetricInfo(
        unit="%", across_agents="mean", better="lower", description="softirq CPU (packet processing), all cores"
    ),
    "host.ctx_switches_per_s": MetricInfo(
        unit="1/s", across_agents="mean", better="lower", description="context switches"
    ),
    "host.cpu_per_gbps": MetricInfo(
        unit="% per Gbit/s", across_agents="mean", better="lower", description="host CPU % per Gbit/s of goodput"
    ),
}

HostSample = dict[str, Any]  # {"t", "dt", "values": {...}, "per_core": {...}, "net": {iface: {...}}}


def _busy(times: Any) -> tuple[float, float, float]:
    """(busy, softirq, total) CPU seconds of one psutil cpu_times record."""
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    # guest time is already counted in user time on Linux
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return total - idle, times.softirq, total


class LocalHostCollector:
    """Samples this host every second from `start_at` for `seconds`, in a background thread."""

    def __init__(self, *, start_at: float, seconds: float, on_sample: Callable[[HostSample], None] | None = None):
        self.host = socket.gethostname()
        self.samples: list[HostSample] = []
        self._start_at, self._seconds, self._on_sample = start_at, seconds, on_sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="host-counters", daemon=True)

    def start(self) -> LocalHostCollector:
        self._thread.start()
        return self

    def stop(self) -> list[HostSample]:
        self._stop.set()
        self._thread.join()
        return self.samples

    def _loop(self) -> None:
        self._stop.wait(max(0.0, self._start_at - time.time()))
        previous, t_prev = self._read(), time.time()
        tick = 1
        while not self._stop.is_set() and tick <= self._seconds + 0.5:
            self._stop.wait(max(0.0, self._start_at + tick - time.time()))
            if self._stop.is_set():
                break
            current, now = self._read(), time.time()
            sample = self._sample(previous, current, t_prev, now)
            self.samples.append(sample)
            if self._on_sample:
                self._on_sample(sample)
            previous, t_prev, tick = current, now, tick + 1

    @staticmethod
    def _read() -> dict[str, Any]:
        return {
            "cpus": psutil.cpu_times(percpu=True),
            "ctx": psutil.cpu_stats().ctx_switches,
            "net": psutil.net_io_counters(pernic=True),
        }

    @staticmethod
    def _sample(before: dict[str, Any], after: dict[str, Any], t0: float, t1: float) -> HostSample:
        dt = max(t1 - t0, 1e-6)
        per_core_busy, per_core_softirq = [], []
        busy_sum = softirq_sum = total_sum = 0.0
        for a, b in zip(before["cpus"], after["cpus"], strict=True):
            busy_a, soft_a, total_a = _busy(a)
            busy_b, soft_b, total_b = _busy(b)
            total = max(total_b - total_a, 1e-9)
            per_core_busy.append(100.0 * (busy_b - busy_a) / total)
            per_core_softirq.append(100.0 * (soft_b - soft_a) / total)
            busy_sum, softirq_sum, total_sum = (
                busy_sum + busy_b - busy_a,
                softirq_sum + soft_b - soft_a,
                total_sum + total,
            )
        net = {}
        for iface, b in after["net"].items():
            a = before["net"].get(iface)
            if a is None:
                continue
            net[iface] = {
                "rx_bytes_per_s": (b.bytes_recv - a.bytes_recv) / dt,
                "tx_bytes_per_s": (b.bytes_sent - a.bytes_sent) / dt,
                "rx_packets_per_s": (b.packets_recv - a.packets_recv) / dt,
                "tx_packets_per_s": (b.packets_sent - a.packets_sent) / dt,
                "rx_drops_per_s": (b.dropin - a.dropin) / dt,
                "tx_drops_per_s": (b.dropout - a.dropout) / dt,
            }
        return {
            "t": t0,
            "dt": dt,
            "values": {
                "host.cpu_pct": 100.0 * busy_sum / max(total_sum, 1e-9),
                "host.softirq_pct": 100.0 * softirq_sum / max(total_sum, 1e-9),
                "host.ctx_switches_per_s": (after["ctx"] - before["ctx"]) / dt,
            },
            "per_core": {"cpu_pct": per_core_busy, "softirq_pct": per_core_softirq},
            "net": net,
        }
