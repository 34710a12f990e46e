"""Counters of the Linux host this process runs on, once a second, aligned to a trial's start.

CPU % (total and per core, with softirq), context switches, per-interface bytes/packets/drops, and, given a
pattern, the CPU of the appliance's processes (on KVM every VM is a qemu process). The controller samples
its own machine with it; a hypervisor agent (`vtax.host_counters`) samples the host it runs on.
"""

from __future__ import annotations

import math
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil

from agent.wire import HostSample

HOSTNAME = socket.gethostname()


def _busy(times: Any) -> tuple[float, float, float]:
    """(busy, softirq, total) CPU seconds of one psutil cpu_times record."""
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    # guest time is already counted in user time on Linux
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return total - idle, times.softirq, total


class HostSampler:
    """Reads this host's counters; each `sample()` covers the time since the previous reading.

    `appliance` is a regular expression searched for in every process's name and command line; the
    matching processes' CPU (user + system, all their threads) is `appliance.host_cpu_pct`, in % of all the
    host's cores, on the same scale as `host.cpu_pct`, and their resident memory at the sample's end is
    `appliance.rss_mb`. `host.mem_used_mb` is the host's memory in use then (total − available).
    """

    def __init__(self, *, appliance: str | None = None) -> None:
        self._appliance = re.compile(appliance) if appliance else None
        self._matches: dict[tuple[int, float], bool] = {}  # (pid, start time) -> matches the pattern
        self._previous, self._t = self._read(), time.time()

    def sample(self) -> HostSample:
        current, now = self._read(), time.time()
        sample = self._difference(self._previous, current, self._t, now)
        self._previous, self._t = current, now
        return sample

    def _read(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        reading = {
            "cpus": psutil.cpu_times(percpu=True),
            "ctx": psutil.cpu_stats().ctx_switches,
            "net": psutil.net_io_counters(pernic=True),
            "mem_used": memory.total - memory.available,
        }
        if self._appliance is not None:
            reading["appliance"] = self._appliance_usage()
        return reading

    def _appliance_usage(self) -> dict[tuple[int, float], tuple[float, int]]:
        """CPU seconds so far and resident bytes of every matching process, keyed by (pid, start time) so a
        reused pid is new."""
        assert self._appliance is not None
        found: dict[tuple[int, float], tuple[float, int]] = {}
        matches: dict[tuple[int, float], bool] = {}
        for proc in psutil.process_iter():
            try:
                key = (proc.pid, proc.create_time())
                matched = self._matches.get(key)
                if matched is None:
                    text = f"{proc.name()} {' '.join(proc.cmdline())}"
                    matched = self._appliance.search(text) is not None
                matches[key] = matched
                if matched:
                    times = proc.cpu_times()
                    found[key] = (times.user + times.system, proc.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self._matches = matches  # forget processes that are gone
        return found

    def _difference(self, before: dict[str, Any], after: dict[str, Any], t0: float, t1: float) -> HostSample:
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
        sample: HostSample = {
            "t": t0,
            "dt": dt,
            "host": HOSTNAME,
            "values": {
                "host.cpu_pct": 100.0 * busy_sum / max(total_sum, 1e-9),
                "host.softirq_pct": 100.0 * softirq_sum / max(total_sum, 1e-9),
                "host.ctx_switches_per_s": (after["ctx"] - before["ctx"]) / dt,
                "host.cpu_max_core_pct": max(per_core_busy, default=0.0),
                "host.mem_used_mb": after["mem_used"] / 2**20,
            },
            "per_core": {"cpu_pct": per_core_busy, "softirq_pct": per_core_softirq},
            "net": net,
        }
        if self._appliance is not None:
            # a process started within the second counts with all its CPU; one that ended, not at all
            earlier = before["appliance"]
            used = sum(cpu - earlier.get(key, (0.0, 0))[0] for key, (cpu, _) in after["appliance"].items())
            sample["values"]["appliance.host_cpu_pct"] = 100.0 * used / max(total_sum, 1e-9)
            sample["values"]["appliance.rss_mb"] = sum(rss for _, rss in after["appliance"].values()) / 2**20
            sample["appliance"] = {"pattern": self._appliance.pattern, "processes": len(after["appliance"])}
        return sample


def sample_window(
    *, start_at: float, seconds: float, stop: Callable[[], bool], appliance: str | None = None
) -> Iterator[HostSample]:
    """One sample per second from `start_at` for `seconds`, each at a whole second after `start_at`,
    until `stop()` says otherwise (checked every 0.1 s). A tick already past when it is due is skipped.
    """
    if not _sleep_until(start_at, stop):
        return
    sampler = HostSampler(appliance=appliance)
    tick = 0
    while True:
        tick = max(tick + 1, math.ceil(time.time() - start_at))
        if tick > seconds + 0.5 or not _sleep_until(start_at + tick, stop):
            return
        yield sampler.sample()


def _sleep_until(t: float, stop: Callable[[], bool]) -> bool:
    """Wait for time `t`; False if `stop()` became true first."""
    while (left := t - time.time()) > 0:
        if stop():
            return False
        time.sleep(min(0.1, left))
    return not stop()
