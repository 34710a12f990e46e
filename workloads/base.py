"""The contract every workload kind fulfils, and the shapes of what it produces.

Samples and summaries are plain JSON-able dicts because they cross process and network boundaries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NotRequired, Protocol, TypedDict

from pydantic import BaseModel, ConfigDict


class Sample(TypedDict):
    """One measurement interval of one workload on one agent."""

    t: float  # wall-clock start of the interval, unix seconds
    dt: float  # interval length, seconds
    values: dict[str, float]
    histogram: NotRequired[dict[str, int]]  # latency buckets (workloads.histogram), mergeable across samples


class Target(TypedDict):
    """Where a client role sends its load."""

    host: str
    port: int


@dataclass(frozen=True, kw_only=True)
class MetricInfo:
    """How one per-sample value is reported and combined."""

    unit: str
    across_agents: Literal["sum", "mean"]  # how one second of several agents combines
    better: Literal["higher", "lower"]
    description: str


def combine(info: MetricInfo | None, values: list[float]) -> float:
    """Several agents' (or hosts') values of one metric as one: summed or averaged, as the metric says."""
    return sum(values) if info is not None and info.across_agents == "sum" else sum(values) / len(values)


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """What a runner needs to know about the trial it runs in."""

    start_at: float  # unix time the load starts
    duration: float  # seconds: warm-up + steady + cool-down
    deadline: float  # unix time by which all load must have stopped
    target: Target | None = None
    progress: Callable[[dict[str, float]], None] = field(default=lambda values: None)
    """Live, provisional readings for displays, about once a second; samples remain the record."""
    cancelled: Callable[[], bool] = field(default=lambda: False)
    locustfile_dir: Path | None = None
    """The agent's own directory of custom locustfiles, set on the agent, never by a message."""
    started: list[float] = field(default_factory=list)
    """When the load was released (wait_for_start records it): the start the skew is measured by."""

    def wait_for_start(self) -> None:
        """Block until the common start (or a cancel), and record the moment. A runner starts its tools' processes
        first and calls this just before releasing their load, so no process start-up delays the load."""
        while (left := self.start_at - time.time()) > 0 and not self.cancelled():
            time.sleep(min(0.1, left))
        self.started.append(time.time())

    def seconds_left(self) -> float:
        return self.deadline - time.time()

    def check_stop(self) -> None:
        """Raise if the load must stop now: past the deadline, or cancelled."""
        if time.time() >= self.deadline:
            raise DeadlineExceeded("still running at the deadline")
        if self.cancelled():
            raise Cancelled("stopped by the controller")


class DeadlineExceeded(Exception):
    """The workload did not end by the trial's hard deadline and was killed."""


class Cancelled(Exception):
    """The controller cancelled the run; the load was stopped."""


class WorkloadError(Exception):
    """The workload could not run (tool missing, refused connection, bad output)."""


class WorkloadParams(BaseModel):
    """Base of every workload's parameter model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class WorkloadKind(Protocol):
    """A workload module: `workloads/<kind>.py`."""

    KIND: str
    Params: type[WorkloadParams]
    METRICS: dict[str, MetricInfo]
    HAS_SERVER: bool

    def serve(self, params: WorkloadParams, *, bind: str, deadline: float) -> Target:
        """Start the server side detached; it must stop by itself at `deadline`."""
        ...

    def external_target(self, params: WorkloadParams) -> Target | None:
        """A server outside vtax that the parameters name, if any."""
        ...

    def run(self, params: WorkloadParams, ctx: RunContext) -> Iterator[Sample]:
        """Start the tools, release the load at `ctx.wait_for_start()`, and yield its samples; raise
        DeadlineExceeded past `ctx.deadline`."""
        ...

    def summarize(self, params: WorkloadParams, samples: list[Sample]) -> dict[str, float]:
        """Whole-run figures of one agent's samples."""
        ...


# Optional hooks a kind module may define, looked up by the analysis:
#   trial_kpis(samples, per_second) -> dict[str, float]: KPIs that per-second means cannot give (percentiles of
#       merged histograms, ratios); `samples` are the trial's steady samples of all agents, `per_second` each
#       field's values combined across agents, one per steady second.
#   warnings(kpis, params, cpu_warned) -> list[(code, message)]: validity findings of one trial.
#   unavailable_metrics(params) -> dict[field, reason]: metrics these parameters never report; the spec refuses
#       an SLA rule on one.


def mean_of(samples: list[Sample], key: str) -> float | None:
    """Mean of one value over the samples that carry it."""
    values = [s["values"][key] for s in samples if key in s["values"]]
    return sum(values) / len(values) if values else None
