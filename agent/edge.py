"""An agent's edge: where a request from the wire becomes a task call, and its result a reply.

Here, and only here: the allowlist is checked before any load starts; the request's times are converted from
the controller's clock to this agent's and every time the task reports back (its result, streamed host
samples, InfluxDB points) to the controller's; the live outputs are wired (progress and host samples to the
controller, samples and readings to InfluxDB). Every failure becomes an error reply: an agent outlives
anything a message can do to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent import wire
from agent.hostsampler import HOSTNAME
from agent.points import host_lines, live_line, phase_of, sample_line
from agent.safety import Allowlist, TargetRefused
from agent.sink import InfluxSink
from agent.tasks import TASKS, TaskIO
from agent.wire import AgentResult, HostCountersReply, HostSample, Message, Reply, Request
from workloads.base import Sample


@dataclass(frozen=True, kw_only=True)
class AgentHost:
    """What the process hosting an agent knows that no message may set."""

    name: str
    allowlist: Allowlist = field(default_factory=Allowlist)
    is_cancelled: Callable[[str], bool] = field(default=lambda run_id: False)
    locustfile_dir: Path | None = None
    sink: InfluxSink | None = None
    ended_trials: set[tuple[str, int]] = field(default_factory=set)  # (run, trial) the controller ended early


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
            for key in ("start_at", "started_at", "ended_at"):
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
    reply: Reply = {"id": request.get("id"), "agent": host.name, "ok": False}
    try:
        name = request["task"]
        task = TASKS.get(name)
        if task is None:
            raise LookupError(f"unknown task {name!r}")
        clock = ClockEdge(float(request.get("clock_offset", 0.0)))
        kwargs: dict[str, object] = dict(request["kwargs"])
        for key in wire.INSTANTS.get(name, ()):
            kwargs[key] = clock.local(float(kwargs[key]))  # type: ignore[arg-type]
        target = kwargs.get("target")
        if name == wire.RUN_WORKLOAD and isinstance(target, dict):
            host.allowlist.check(target["host"])
        result = task(**kwargs, io=_io(name, request, host, clock, send))
        reply["result"] = clock.reply(name, result)  # type: ignore[typeddict-item]
        reply["ok"] = True
    except TargetRefused as exc:
        reply["error"], reply["refused"] = f"refused: {exc}", True
    except Exception as exc:  # reported to the controller, never fatal to the agent
        reply["error"] = f"{type(exc).__name__}: {exc}"
    send(reply)


def _io(name: str, request: Request, host: AgentHost, clock: ClockEdge, send: Callable[[Message], None]) -> TaskIO:
    """The live outputs and the cancellation check of one task, in the controller's clock."""
    kwargs: dict[str, object] = dict(request["kwargs"])
    tags = kwargs.get("tags")
    if not isinstance(tags, dict):
        return TaskIO(locustfile_dir=host.locustfile_dir, ended=host.ended_trials)
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
            send({"id": request.get("id"), "agent": host.name, "sample": converted})

        return TaskIO(cancelled=cancelled, host_sample=host_sample, ended=host.ended_trials)

    workload = str(kwargs["workload"])
    client_tags = {**tags, "agent": kwargs["agent"], "host": HOSTNAME}

    def progress(values: dict[str, float]) -> None:
        if sink is not None:
            now = clock.now()
            sink.submit([live_line(values, client_tags, now, phase(now, 0.0))])
        send({"id": request.get("id"), "agent": host.name, "workload": workload, "progress": values})

    def sample(measured: Sample) -> None:
        if sink is not None:
            converted = clock.sample(measured)
            sink.submit([sample_line(converted, client_tags, phase(converted["t"], converted["dt"]))])

    return TaskIO(
        cancelled=cancelled,
        progress=progress,
        sample=sample,
        locustfile_dir=host.locustfile_dir,
        ended=host.ended_trials,
    )
