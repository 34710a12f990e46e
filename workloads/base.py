"""The contract every workload kind fulfils, and the shapes of what it produces.

Samples and summaries are plain JSON-able dicts because they cross process and network boundaries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, NotRequired, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic validates only this TypedDict on Python < 3.12

# A host a tool is pointed at: a name or an address, never something a tool's command line could read as an
# option (`--logfile=...`) or a URL could read as credentials or a path (`user@host`, `a/b`).
HostName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:%][A-Za-z0-9_.:%-]{0,252}$")]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]


class Sample(TypedDict):
    """One measurement interval of one workload on one agent."""

    t: float  # wall-clock start of the interval, unix seconds
    dt: float  # interval length, seconds
    values: dict[str, float]
    histogram: NotRequired[dict[str, int]]  # latency buckets (workloads.histogram), mergeable across samples


class Target(TypedDict):
    """Where a client role sends its load."""

    host: HostName
    port: Port


LOOPBACK = ("127.0.0.0/8", "::1/128")  # what an agent may send load to unless told more

_TARGET = TypeAdapter(Target)


def check_target(value: object) -> Target:
    """A target as a tool may be pointed at it: a host name or address, a port 1–65535; ValueError otherwise."""
    try:
        return _TARGET.validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "target"
        raise ValueError(f"target {field}: {error['msg']}") from None


def parse_host_port(text: str) -> Target:
    """`host:port`, or `[address]:port` for IPv6."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or len(port) > 5:
        raise ValueError(f"target must be host:port, got {text[:80]!r}")
    return check_target({"host": host.removeprefix("[").removesuffix("]"), "port": int(port)})


def netloc(target: Target) -> str:
    """`host:port` as a URL or a command line wants it: an IPv6 address in brackets."""
    host = target["host"]
    return f"[{host}]:{target['port']}" if ":" in host else f"{host}:{target['port']}"


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
    allow: tuple[str, ...] = LOOPBACK
    """The agent's allowlist: a tool that makes its own connections (locust) refuses any address outside it."""
    started: list[float] = field(default_factory=list)
    """When the load was released (wait_for_start records it): the start the skew is measured by."""

    def wait_for_start(self) -> None:
        """Block until the common start (or a cancel), and record the moment. A runner starts its tools' processes
        first and calls this just before releasing their load, so no process start-up delays the load."""
        while (left := self.start_at - time.time()) > 0 and not self.cancelled():
            time.sleep(min(0.1, left))
        self.started.append(time.time())

    def released_at(self, when: float) -> None:
        """A tool that releases its own load at `start_at` (locust) says when it really did: a tool that was
        still starting up then released it late, and the start skew must show it."""
        if self.started and when > self.started[0]:
            self.started[0] = when

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


class StrictModel(BaseModel):
    """Base of every model a person writes (specs, workload parameters): unknown keys are errors, not silently
    ignored; a number is never NaN or infinite, nor a boolean (`true` where a count goes); no text holds a NUL."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _no_surprises(cls, data: object) -> object:
        """(A model validator: a field validator may not touch a discriminator such as a workload's `kind`.)"""
        if not isinstance(data, dict):
            return data
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if field is None:
                continue  # an unknown key: `extra="forbid"` names it
            if isinstance(value, bool) and _wants_number(field.annotation):
                raise PydanticCustomError("number_type", "expected a number, got a boolean", {"field": name})
            texts = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
            if any(isinstance(text, str) and "\x00" in text for text in texts):
                raise PydanticCustomError("nul_byte", "contains a NUL byte", {"field": name})
        return data


def _wants_number(annotation: object) -> bool:
    """Whether a field's type takes a number and no boolean (int | None: yes; bool | int: no)."""
    found: set[object] = set()
    pending = [annotation]
    while pending:
        current = pending.pop()
        found.add(current)
        pending.extend(get_args(current))
    return bool(found & {int, float}) and bool not in found


class WorkloadParams(StrictModel):
    """Base of every workload's parameter model."""


class ScaledOutParams(WorkloadParams):
    """A workload whose generator runs as several processes, summed per second into one set of metrics (so
    the box, not one single-threaded process, is the limit), each pinned where `affinity` says."""

    processes: int = Field(1, ge=1, le=64, description="generator processes on each agent, summed per second")
    affinity: int | list[int] | None = Field(
        None, description="CPU to pin the generator to; a list: process i on the i-th CPU, round robin"
    )

    @model_validator(mode="after")
    def _check_affinity(self) -> ScaledOutParams:
        cpus = [self.affinity] if isinstance(self.affinity, int) else self.affinity or []
        if not cpus and self.affinity is not None:
            raise ValueError("affinity: give a CPU number or a non-empty list of them")
        if any(not 0 <= cpu <= 4095 for cpu in cpus):
            raise ValueError("affinity: CPU numbers are 0 to 4095")
        return self

    def cpu(self, process: int) -> int | None:
        """The CPU process `process` (0-based) is pinned to, if any."""
        if self.affinity is None or isinstance(self.affinity, int):
            return self.affinity
        return self.affinity[process % len(self.affinity)]


class WorkloadKind(Protocol):
    """A workload module: `workloads/<kind>.py`."""

    KIND: str
    Params: type[WorkloadParams]
    METRICS: dict[str, MetricInfo]
    HAS_SERVER: bool
    READY_S: float
    """Seconds its tools need from the task's arrival until they can release the load (the lead is at least this)."""

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
#   histogram_kpis(merged) -> dict[str, float]: the KPIs a merged latency histogram gives (percentiles); a soak's
#       window of segments gets them exactly from its segments' histograms merged.
#   warnings(kpis, params, cpu_warned) -> list[(code, message)]: validity findings of one trial.
#   unavailable_metrics(params) -> dict[field, reason]: metrics these parameters never report; the spec refuses
#       an SLA rule on one.
#   offered_load(params) -> OfferedLoad: the most load these parameters ask one agent to send, for the agent's
#       own rate limits (`vtax agent --max-gbps/--max-rps`); a kind without it sends no network load.


class OfferedLoad(TypedDict, total=False):
    """The most one agent is asked to send; a key present with None means as much as it can (unpaced)."""

    gbps: float | None
    rps: float | None


def mean_of(samples: list[Sample], key: str) -> float | None:
    """Mean of one value over the samples that carry it."""
    values = [s["values"][key] for s in samples if key in s["values"]]
    return sum(values) / len(values) if values else None
