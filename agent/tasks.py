"""The task functions an agent executes, addressed by the names in `agent.wire`; both engines run them.

They work in the agent's own clock and know nothing of the wire's: `agent.edge` converts a request's times
before calling them and their results' times after. Parameters are validated again here with the workload's
own model: nothing from the wire is trusted, and nothing from it is ever unpickled or executed. What the
process hosting the agent supplies (cancellation, live outputs, the locustfile directory) arrives in `io`,
never in a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import workloads
from agent import wire
from agent.hostsampler import HOSTNAME, sample_window
from agent.kept import Kept
from agent.wire import AgentResult, ClientTags, HostCountersReply, HostSample, JSONObject, TrialTags
from workloads.base import Cancelled, DeadlineExceeded, RunContext, Sample, Target, WorkloadError


@dataclass(frozen=True, kw_only=True)
class TaskIO:
    """What a running task reports to and asks of the process hosting it (the edge), in the agent's clock."""

    cancelled: Callable[[], bool] = field(default=lambda: False)
    progress: Callable[[dict[str, float]], None] = field(default=lambda values: None)
    """A running workload's live, provisional reading, about once a second."""
    sample: Callable[[Sample], None] = field(default=lambda sample: None)
    """Each workload sample as it is measured."""
    host_sample: Callable[[HostSample], None] = field(default=lambda sample: None)
    """Each second of host counters as it is taken."""
    allow: tuple[str, ...] = ()
    """The agent's allowlist (networks), for tools that connect on their own (a locustfile's requests)."""
    locustfile_dir: Path | None = None
    ended: set[tuple[str, int]] = field(default_factory=set)
    """(run, trial) pairs the controller ended early; shared by every task of this agent."""
    kept: Kept | None = None
    """Where this agent keeps its load tasks until the controller has stored them."""


def serve(*, kind: str, params: JSONObject, bind: str, deadline: float, io: TaskIO | None = None) -> Target:
    """Start a workload's server side; returns where clients reach it."""
    module = workloads.get(kind)
    return module.serve(module.Params.model_validate(params), bind=bind, deadline=deadline)


def run_workload(
    *,
    agent: str,
    workload: str,
    kind: str,
    params: JSONObject,
    target: Target | None,
    start_at: float,
    duration: float,
    deadline: float,
    tags: ClientTags | None = None,
    warmup: float = 0.0,
    steady: float = 0.0,
    io: TaskIO | None = None,
) -> AgentResult:
    """Run the load from the common start (the runner prepares its tools before it), and return its samples
    and summary.

    Never raises for a workload failure: the status says what happened and the samples measured so far
    are kept. The deadline is enforced here, by the agent, whatever the controller does. `tags`, `warmup`
    and `steady` are for the edge's live outputs.
    """
    io = io or TaskIO()
    module = workloads.get(kind)
    checked = module.Params.model_validate(params)
    cpu_before = time.process_time()
    samples: list[Sample] = []
    status: wire.WorkloadStatus = "ok"
    reason = ""
    ctx = RunContext(
        start_at=start_at,
        duration=duration,
        deadline=deadline,
        target=target,
        locustfile_dir=io.locustfile_dir,
        allow=io.allow,
        progress=io.progress,
        cancelled=io.cancelled,
    )
    try:
        for sample in module.run(checked, ctx):
            samples.append(sample)
            io.sample(sample)
    except DeadlineExceeded as exc:
        status, reason = "deadline_exceeded", str(exc)
    except Cancelled as exc:
        status, reason = "cancelled", str(exc)
    except WorkloadError as exc:
        status, reason = "error", str(exc)
    except Exception as exc:  # an agent survives any workload bug and reports it
        status, reason = "error", f"{type(exc).__name__}: {exc}"
    result: AgentResult = {
        "agent": agent,
        "host": HOSTNAME,
        "workload": workload,
        "kind": kind,
        "status": status,
        "reason": reason,
        "start_at": start_at,
        "ended_at": time.time(),
        "samples": samples,
        "summary": module.summarize(checked, samples) if samples else {},
        "agent_cpu_s": time.process_time() - cpu_before,
        "agent_rss_mb": psutil.Process().memory_info().rss / 2**20,
    }
    if ctx.started:  # the load was released (it may have failed before)
        result["started_at"] = ctx.started[0]
    return result


def host_counters(
    *,
    start_at: float,
    seconds: float,
    deadline: float,
    appliance_processes: str | None = None,
    tags: TrialTags | None = None,
    warmup: float = 0.0,
    steady: float = 0.0,
    io: TaskIO | None = None,
) -> HostCountersReply:
    """Sample the host this agent runs on once a second for a trial window; the task of a hypervisor agent.

    Sampling stops at the window's end, the deadline or cancellation, and the status says which. Each sample
    also goes to `io.host_sample` as it is taken (the controller's live view, InfluxDB).
    """
    io = io or TaskIO()

    def stop() -> bool:
        return time.time() >= deadline or io.cancelled()

    samples: list[HostSample] = []
    for sample in sample_window(start_at=start_at, seconds=seconds, stop=stop, appliance=appliance_processes):
        samples.append(sample)
        io.host_sample(sample)
    status: wire.HostStatus = "ok"
    if io.cancelled():
        status = "cancelled"
    elif time.time() >= deadline:
        status = "deadline_exceeded"
    return {"host": HOSTNAME, "status": status, "samples": samples}


def ping(*, io: TaskIO | None = None) -> wire.PingReply:
    """Liveness and clock reading."""
    return {"time": time.time()}


def end_trial(*, run: str, trial: int, io: TaskIO | None = None) -> wire.EndTrialReply:
    """The controller is done with a trial before its window is over (its load ended early): what this agent
    still runs or samples for it stops, rather than writing on into the next trial's time under its tags."""
    if io is not None:
        io.ended.add((run, int(trial)))
    return {"ended": True}


def kept(*, run: str, forget_before: int, io: TaskIO | None = None) -> wire.KeptReply:
    """What this agent kept of a run's load tasks (a controller resuming it collects a segment it was gone
    for), after forgetting those of trials before `forget_before`, which the controller has."""
    if io is None or io.kept is None:
        return {"results": []}
    io.kept.forget(run, forget_before)
    return {"results": io.kept.collect(run)}


TASKS: dict[str, Callable[..., object]] = {
    wire.SERVE: serve,
    wire.RUN_WORKLOAD: run_workload,
    wire.HOST_COUNTERS: host_counters,
    wire.PING: ping,
    wire.END_TRIAL: end_trial,
    wire.KEPT: kept,
}
