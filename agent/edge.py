"""An agent's edge: where a request from the wire becomes a task call, and its result a reply.

Here, and only here: the request is checked against its type on the wire; the allowlist is checked before
any load starts, and the tool is given the address that was checked; the request's times are converted from
the controller's clock to this agent's and every time the task reports back (its result, streamed host
samples, InfluxDB points) to the controller's; the live outputs are wired (progress and host samples to the
controller, samples and readings to InfluxDB). Every failure becomes an error reply: an agent outlives
anything a message can do to it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import workloads
from agent import wire
from agent.hostsampler import HOSTNAME
from agent.kept import Kept, KeptTask
from agent.points import host_lines, live_line, phase_of, sample_line
from agent.safety import Allowlist, RateLimits, Refused
from agent.settings import DEFAULT_TASK_SLOTS
from agent.sink import InfluxSink
from agent.tasks import TASKS, TaskIO
from agent.wire import AgentResult, HostCountersReply, HostSample, Message, Reply, Request, TaskRequest
from workloads.base import Sample

LATE_START_S = 1.0  # a load task that arrives this long after its common start is refused, not run late
MAX_AHEAD_S = 300.0  # nor one that starts later than this after it arrives: the controller sends them lead s ahead
MAX_GRACE_S = 3600.0 + 60.0  # a deadline lies at most the spec's longest grace past the load's end
HOLDING_TASKS = (wire.RUN_WORKLOAD, wire.HOST_COUNTERS)  # tasks that hold a thread for their trial


class TaskExpired(Exception):
    """A request that arrived too late to be carried out as asked."""


class TaskSlots:
    """How many load tasks one agent process runs at once, each on a thread of its own. One more is refused at
    once, naming the limit, rather than started seconds late when a thread frees."""

    def __init__(self, limit: int = DEFAULT_TASK_SLOTS) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    @contextlib.contextmanager
    def take(self, agent: str) -> Iterator[None]:
        if not self._free.acquire(blocking=False):
            raise Refused(
                f"agent {agent!r} already runs {self.limit} load tasks at once, its limit (vtax agent --concurrency)"
            )
        try:
            yield
        finally:
            self._free.release()


@dataclass(frozen=True, kw_only=True)
class AgentHost:
    """What the process hosting an agent knows that no message may set."""

    name: str
    allowlist: Allowlist = field(default_factory=Allowlist)
    limits: RateLimits = field(default_factory=RateLimits)
    is_cancelled: Callable[[str], bool] = field(default=lambda run_id: False)
    locustfile_dir: Path | None = None
    sink: InfluxSink | None = None
    slots: TaskSlots = field(default_factory=TaskSlots)  # shared by the agents of one process
    ended_trials: set[tuple[str, int]] = field(default_factory=set)  # (run, trial) the controller ended early
    kept: Kept | None = None  # where load tasks are kept until the controller has stored them


@dataclass(frozen=True)
class ClockEdge:
    """This agent's clock against the controller's: `offset` = agent − controller."""

    offset: float

    def local(self, t: float) -> float:
        return t + self.offset

    def now(self) -> float:
        """Now, in the controller's clock."""
        return time.time() - self.offset

    def sample(self, sample: Sample) -> Sample:
        return {**sample, "t": sample["t"] - self.offset}

    def host_sample(self, sample: HostSample) -> HostSample:
        return {**sample, "t": sample["t"] - self.offset}

    def reply(self, task: str, result: object) -> object:
        """A task's result in the controller's clock."""
        if task == wire.RUN_WORKLOAD:
            agent_result: AgentResult = result  # type: ignore[assignment]
            converted: AgentResult = {**agent_result, "samples": [self.sample(s) for s in agent_result["samples"]]}
            for key in ("start_at", "started_at", "ended_at", "received_at"):
                if key in converted:
                    converted[key] -= self.offset  # type: ignore[literal-required]
            return converted
        if task == wire.HOST_COUNTERS:
            host: HostCountersReply = result  # type: ignore[assignment]
            return {**host, "samples": [self.host_sample(s) for s in host["samples"]]}
        return result


def execute(request: Request, host: AgentHost, send: Callable[[Message], None]) -> None:
    """Run one task request and send its reply; a running workload also sends progress, a host sampler
    its samples."""
    received = time.time()
    reply: Reply = {"id": request.get("id"), "agent": host.name, "ok": False}
    try:
        name = request["task"]
        task = TASKS.get(name)
        if task is None:
            raise LookupError(f"unknown task {name!r}")
        clock = ClockEdge(float(request.get("clock_offset", 0.0)))
        checked = wire.check_request(name, request["kwargs"])
        kwargs: dict[str, object] = dict(checked)
        for key in wire.EDGE_FIELDS:  # the edge's own (what the agent kept: `_keep`), not the task's
            kwargs.pop(key, None)
        for key in wire.INSTANTS.get(name, ()):
            kwargs[key] = clock.local(float(kwargs[key]))  # type: ignore[arg-type]
        _check_in_time(name, kwargs)
        target = kwargs.get("target")
        if name == wire.RUN_WORKLOAD:
            if not host.limits.unlimited:  # the task validates its parameters itself: only a limit needs them here
                kind = str(kwargs["kind"])
                host.limits.check(kind, workloads.get(kind).Params.model_validate(kwargs["params"]))
            if isinstance(target, dict):
                kwargs["target"] = {**target, "host": host.allowlist.check(target["host"])}
        with host.slots.take(host.name) if name in HOLDING_TASKS else contextlib.nullcontext():
            keeping = _keep(name, checked, host)
            result = task(**kwargs, io=_io(name, checked, request.get("id"), host, clock, send, keeping))
        if name == wire.RUN_WORKLOAD:
            result = {**result, "received_at": received}  # type: ignore[dict-item]
        reply["result"] = clock.reply(name, result)  # type: ignore[typeddict-item]
        if keeping is not None:
            keeping.done(reply["result"])  # type: ignore[arg-type]
        reply["ok"] = True
    except Refused as exc:
        reply["error"], reply["refused"] = f"refused: {exc}", True
    except TaskExpired as exc:
        reply["error"] = f"not run: {exc}"
    except Exception as exc:  # reported to the controller, never fatal to the agent
        reply["error"] = f"{type(exc).__name__}: {exc}"
    send(reply)


def _check_in_time(name: str, kwargs: dict[str, object]) -> None:
    """A request that waited in a queue (its agent was paused, the broker slow) is not carried out late: its
    load would run into the next trial's time."""
    now = time.time()
    deadline = kwargs.get("deadline")
    if isinstance(deadline, float | int) and now >= deadline:
        raise TaskExpired(f"{name} arrived {now - deadline:.1f} s after its deadline")
    start_at = kwargs.get("start_at")
    if name not in HOLDING_TASKS or not isinstance(start_at, float | int):
        return
    if now > start_at + LATE_START_S:
        raise TaskExpired(f"{name} arrived {now - start_at:.1f} s after its common start")
    if start_at - now > MAX_AHEAD_S:
        raise Refused(f"{name} starts {start_at - now:.0f} s after it arrived, more than {MAX_AHEAD_S:g} s ahead")
    length = float(kwargs.get("duration", kwargs.get("seconds", 0.0)))  # type: ignore[arg-type]
    if isinstance(deadline, float | int) and deadline > start_at + length + MAX_GRACE_S:
        raise Refused(f"{name}'s deadline lies {deadline - start_at - length:.0f} s past its load's end")


def _keep(name: str, kwargs: TaskRequest, host: AgentHost) -> KeptTask | None:
    """A load task's file in the agent's keep (`agent.kept`), once the run's stored trials are forgotten."""
    if name != wire.RUN_WORKLOAD or host.kept is None:
        return None
    request: wire.RunWorkloadRequest = kwargs  # type: ignore[assignment]
    run, trial = request["tags"]["run"], int(request["tags"]["trial"])
    if "acked_before" in request:
        host.kept.forget(run, request["acked_before"])
    return host.kept.begin(
        run=run,
        trial=trial,
        agent=request["agent"],
        workload=request["workload"],
        start_at=request["start_at"],
        deadline=request["deadline"],
    )


def _io(
    name: str,
    kwargs: TaskRequest,
    request_id: int | None,
    host: AgentHost,
    clock: ClockEdge,
    send: Callable[[Message], None],
    keeping: KeptTask | None = None,
) -> TaskIO:
    """The live outputs and the cancellation check of one task (`kwargs`: its checked request, in the
    controller's clock; `keeping`: where a load task's samples are kept as they come)."""
    tags = kwargs.get("tags")
    if not isinstance(tags, dict):
        return TaskIO(locustfile_dir=host.locustfile_dir, ended=host.ended_trials, kept=host.kept)
    run, trial = str(tags["run"]), int(tags["trial"])
    start_at, warmup, steady = float(kwargs["start_at"]), float(kwargs["warmup"]), float(kwargs["steady"])  # type: ignore[arg-type]
    sink = host.sink

    def cancelled() -> bool:
        return host.is_cancelled(run) or (run, trial) in host.ended_trials

    def phase(t: float, dt: float) -> str:
        return phase_of(t, dt, start_at=start_at, warmup=warmup, steady=steady)

    if name == wire.HOST_COUNTERS:
        host_tags = {**tags, "host": HOSTNAME}

        def host_sample(sample: HostSample) -> None:
            converted = clock.host_sample(sample)
            if sink is not None:
                sink.submit(host_lines(converted, host_tags, phase(converted["t"], converted["dt"])))
            send({"id": request_id, "agent": host.name, "sample": converted})

        return TaskIO(cancelled=cancelled, host_sample=host_sample, ended=host.ended_trials)

    workload = str(kwargs["workload"])
    client_tags = {**tags, "agent": kwargs["agent"], "host": HOSTNAME}

    def progress(values: dict[str, float]) -> None:
        if sink is not None:
            now = clock.now()
            sink.submit([live_line(values, client_tags, now, phase(now, 0.0))])
        send({"id": request_id, "agent": host.name, "workload": workload, "progress": values})

    def sample(measured: Sample) -> None:
        converted = clock.sample(measured)
        if keeping is not None:
            keeping.sample(converted)
        if sink is not None:
            sink.submit([sample_line(converted, client_tags, phase(converted["t"], converted["dt"]))])

    return TaskIO(
        cancelled=cancelled,
        progress=progress,
        sample=sample,
        allow=tuple(str(network) for network in host.allowlist.networks),
        locustfile_dir=host.locustfile_dir,
        ended=host.ended_trials,
    )
