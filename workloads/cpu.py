"""CPU load: N workers, each burning P % of one core as a duty cycle.

Emulates busy neighbour VMs and measures headroom: when the host is short of CPU, the workers get less
than they ask for, and `achieved_ratio` falls below 1. Workers are separate processes (started as
`python -c`), so they work the same inside a Celery prefork worker, which may not fork
multiprocessing children of its own.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Annotated

import psutil
from pydantic import Field

from workloads.base import MetricInfo, RunContext, Sample, Target, WorkloadParams, mean_of

KIND = "cpu"
HAS_SERVER = False
READY_S = 0.2  # burner processes fork at once

METRICS: dict[str, MetricInfo] = {
    "achieved_pct": MetricInfo(
        unit="% of a core", across_agents="sum", better="higher", description="CPU the workers got"
    ),
    "achieved_ratio": MetricInfo(
        unit="ratio", across_agents="mean", better="higher", description="CPU got / CPU asked for"
    ),
}

_PERIOD = 0.05  # seconds of one duty cycle: short enough to look steady to a 1 s sampler


class CpuParams(WorkloadParams):
    """How much CPU to burn."""

    workers: int = Field(1, ge=1, le=256, description="busy processes")
    percent: float = Field(100.0, gt=0, le=100, description="duty cycle of each worker, % of one core")
    cores: list[Annotated[int, Field(ge=0, le=4095)]] | None = Field(
        None, min_length=1, description="pin the workers to these CPU numbers"
    )


Params = CpuParams


def serve(params: CpuParams, *, bind: str, deadline: float) -> Target:
    raise NotImplementedError("the cpu workload has no server side")


def external_target(params: CpuParams) -> Target | None:
    return None


def burn(percent: float, start_at: float, seconds: float) -> None:
    """From `start_at` (unix time), busy-loop `percent` of every period and sleep the rest, for `seconds`."""
    time.sleep(max(0.0, start_at - time.time()))
    end = time.monotonic() + seconds
    busy = _PERIOD * percent / 100.0
    while (period_start := time.monotonic()) < end:
        while time.monotonic() - period_start < busy:
            pass
        idle = _PERIOD - (time.monotonic() - period_start)
        if idle > 0:
            time.sleep(idle)


def run(params: CpuParams, ctx: RunContext) -> Iterator[Sample]:
    """Start the workers and sample the CPU they actually get, once a second."""
    burner = f"from workloads.cpu import burn; burn({params.percent!r}, {ctx.start_at!r}, {ctx.duration!r})"
    cmd = [sys.executable, "-c", burner]
    procs = [subprocess.Popen(cmd, stdin=subprocess.DEVNULL) for _ in range(params.workers)]
    handles = [psutil.Process(p.pid) for p in procs]
    try:
        if params.cores:
            for handle in handles:
                handle.cpu_affinity(params.cores)
        asked = params.workers * params.percent
        seen: dict[int, float] = {}
        ctx.wait_for_start()  # the burners, started already, begin at the common start by themselves
        previous, t0 = _cpu_seconds(handles, seen), time.time()
        end = ctx.start_at + ctx.duration
        while any(p.poll() is None for p in procs):
            ctx.check_stop()
            time.sleep(max(0.02, min(0.25, t0 + 1.0 - time.time(), end - time.time())))
            now = time.time()
            if now - t0 < 1.0 and now < end and any(p.poll() is None for p in procs):
                continue
            now_cpu = _cpu_seconds(handles, seen)
            # a short last interval counts too: without it the end of the trial would have no sample
            if now - t0 >= 0.5 or (now >= end and now - t0 >= 0.05):
                achieved = 100.0 * (now_cpu - previous) / (now - t0)
                values = {"achieved_pct": achieved, "achieved_ratio": achieved / asked}
                ctx.progress(values)
                yield Sample(t=t0, dt=now - t0, values=values)
            previous, t0 = now_cpu, now
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def _cpu_seconds(handles: list[psutil.Process], last: dict[int, float]) -> float:
    """CPU seconds the workers used so far; a worker that already exited keeps its last reading."""
    for handle in handles:
        try:
            times = handle.cpu_times()
        except psutil.NoSuchProcess:
            continue
        last[handle.pid] = times.user + times.system
    return sum(last.values())


def summarize(params: CpuParams, samples: list[Sample]) -> dict[str, float]:
    return {key: mean for key in METRICS if (mean := mean_of(samples, key)) is not None}
