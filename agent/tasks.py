"""Task functions an agent executes, addressed by name; the same functions serve both engines.

Arguments and results are JSON-able. Parameters are validated again here with the workload's own model:
nothing from the wire is trusted, and nothing from it is ever unpickled or executed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import workloads
from agent.hostcounters import HOSTNAME, HostSample, sample_window
from agent.points import host_lines, live_line, phase_of, sample_line
from agent.safety import Allowlist, TargetRefused
from agent.sink import InfluxSink
from workloads.base import Cancelled, DeadlineExceeded, RunContext, Sample, Target, WorkloadError


def serve(*, kind: str, params: dict[str, Any], bind: str, deadline: float) -> Target:
    """Start a workload's server side; returns where clients reach it."""
    module = workloads.get(kind)
    return module.serve(module.Params.model_validate(params), bind=bind, deadline=deadline)


def run_workload(
    *,
    agent: str,
    workload: str,
    kind: str,
    params: dict[str, Any],
    target: Target | None,
    start_at: float,
    duration: float,
    deadline: float,
    run_id: str = "",
    progress: Callable[[dict[str, float]], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    locustfile_dir: Path | None = None,
    tags: dict[str, Any] | None = None,
    warmup: float = 0.0,
    steady: float = 0.0,
    clock_offset: float = 0.0,
    sink: InfluxSink | None = None,
) -> dict[str, Any]:
    """Wait for the common start, run the load, and return its samples and summary.

    Never raises for a workload failure: the status says what happened and the samples measured so far
    are kept. The deadline is enforced here, by the agent, whatever the controller does. `progress` and
    `cancelled`, `locustfile_dir` and `sink` are supplied by the process hosting the agent (never by a
    message); with a sink, every sample is streamed to InfluxDB as it arrives, tagged with `tags`, in the
    controller's clock (`clock_offset` = this agent's clock − the controller's), as the run store keeps it.
    """
    module = workloads.get(kind)
    checked = module.Params.model_validate(params)
    cpu_before = time.process_time()
    while time.time() < start_at and not (cancelled and cancelled()):
        time.sleep(min(0.1, max(0.0, start_at - time.time())))
    started_at = time.time()
    samples: list[Sample] = []
    status, reason = "ok", ""
    ctx = RunContext(
        start_at=start_at, duration=duration, deadline=deadline, target=target, locustfile_dir=locustfile_dir
    )
    if sink is not None and tags is not None:
        tags = {**tags, "agent": agent, "host": HOSTNAME}
        progress = _streaming(progress, sink, tags, start_at - clock_offset, warmup, steady, clock_offset)
    if progress is not None:
        ctx = dataclasses.replace(ctx, progress=progress)
    if cancelled is not None:
        ctx = dataclasses.replace(ctx, cancelled=cancelled)
    try:
        for sample in module.run(checked, ctx):
            samples.append(sample)
            if sink is not None and tags is not None:
                phase = phase_of(sample["t"], sample["dt"], start_at=start_at, warmup=warmup, steady=steady)
                in_controller_clock = {**sample, "t": sample["t"] - clock_offset}
                sink.submit([sample_line(in_controller_clock, tags, phase)])
    except DeadlineExceeded as exc:
        status, reason = "deadline_exceeded", str(exc)
    except Cancelled as exc:
        status, reason = "cancelled", str(exc)
    except WorkloadError as exc:
        status, reason = "error", str(exc)
    except Exception as exc:  # an agent survives any workload bug and reports it
        status, reason = "error", f"{type(exc).__name__}: {exc}"
    return {
        "agent": agent,
        "host": HOSTNAME,
        "workload": workload,
        "kind": kind,
        "status": status,
        "reason": reason,
        "start_at": start_at,
        "started_at": started_at,
        "ended_at": time.time(),
        "samples": samples,
        "summary": module.summarize(checked, samples) if samples else {},
        "agent_cpu_s": time.process_time() - cpu_before,
    }


def _streaming(
    progress: Callable[[dict[str, float]], None] | None,
    sink: InfluxSink,
    tags: dict[str, Any],
    start_at: float,
    warmup: float,
    steady: float,
    clock_offset: float,
) -> Callable[[dict[str, float]], None]:
    """A progress callback that also writes each live reading to InfluxDB (vtax_live), in the controller's clock."""

    def report(values: dict[str, float]) -> None:
        now = time.time() - clock_offset
        sink.submit([live_line(values, tags, now, phase_of(now, 0.0, start_at=start_at, warmup=warmup, steady=steady))])
        if progress is not None:
            progress(values)

    return report


def host_counters(
    *,
    start_at: float,
    seconds: float,
    deadline: float,
    appliance_processes: str | None = None,
    run_id: str = "",
    tags: dict[str, Any] | None = None,
    warmup: float = 0.0,
    steady: float = 0.0,
    clock_offset: float = 0.0,
    on_sample: Callable[[HostSample], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    sink: InfluxSink | None = None,
) -> dict[str, Any]:
    """Sample the host this agent runs on once a second for a trial window; the task of a hypervisor agent.

    Times are in this agent's clock, as run_workload's, and so are the samples returned. Sampling stops at
    the window's end, the deadline or cancellation, and the status says which. `on_sample`, `cancelled`
    and `sink` are supplied by the process hosting the agent: each sample goes to `on_sample` (the
    controller's live view) and, with a sink, to InfluxDB as vtax_host/vtax_host_net lines tagged with
    `tags`, in the controller's clock.
    """

    def stop() -> bool:
        return time.time() >= deadline or (cancelled is not None and cancelled())

    samples: list[HostSample] = []
    for sample in sample_window(start_at=start_at, seconds=seconds, stop=stop, appliance=appliance_processes):
        samples.append(sample)
        if sink is not None and tags is not None:
            phase = phase_of(sample["t"], sample["dt"], start_at=start_at, warmup=warmup, steady=steady)
            in_controller_clock = {**sample, "t": sample["t"] - clock_offset}
            sink.submit(host_lines(in_controller_clock, {**tags, "host": HOSTNAME}, phase))
        if on_sample is not None:
            on_sample(sample)
    if cancelled is not None and cancelled():
        status = "cancelled"
    elif time.time() >= deadline:
        status = "deadline_exceeded"
    else:
        status = "ok"
    return {"host": HOSTNAME, "status": status, "samples": samples}


def ping() -> dict[str, float]:
    """Liveness and clock reading."""
    return {"time": time.time()}


def end_trial(*, run_id: str, trial: int, ended: set[tuple[str, int]]) -> dict[str, bool]:
    """The controller is done with a trial before its window is over (its load ended early): what this agent
    still runs or samples for it stops, rather than writing on into the next trial's time under its tags.
    `ended` is supplied by the process hosting the agent."""
    ended.add((run_id, int(trial)))
    return {"ended": True}


TASKS: dict[str, Callable[..., Any]] = {
    "vtax.serve": serve,
    "vtax.run_workload": run_workload,
    "vtax.host_counters": host_counters,
    "vtax.ping": ping,
    "vtax.end_trial": end_trial,
}


@dataclass(frozen=True, kw_only=True)
class AgentHost:
    """What the process hosting an agent knows that no message may set."""

    name: str
    allowlist: Allowlist = field(default_factory=Allowlist)
    is_cancelled: Callable[[str], bool] = field(default=lambda run_id: False)
    locustfile_dir: Path | None = None
    sink: InfluxSink | None = None
    ended_trials: set[tuple[str, int]] = field(default_factory=set)  # (run, trial) the controller ended early


def execute(request: dict[str, Any], host: AgentHost, send: Callable[[dict[str, Any]], None]) -> None:
    """Run one task request {id, task, kwargs} and send its reply; load also sends progress messages.

    The allowlist is checked here, before any load starts. Every failure becomes an error reply: an
    agent outlives anything a message can do to it.
    """
    reply: dict[str, Any] = {"id": request.get("id"), "agent": host.name}
    try:
        task = TASKS.get(request["task"])
        if task is None:
            raise LookupError(f"unknown task {request['task']!r}")
        kwargs = dict(request["kwargs"])
        if task in (run_workload, host_counters):
            run_id, trial = kwargs.get("run_id", ""), (kwargs.get("tags") or {}).get("trial")
            kwargs["cancelled"] = lambda: host.is_cancelled(run_id) or (run_id, trial) in host.ended_trials
            kwargs["sink"] = host.sink
        if task is run_workload:
            if kwargs.get("target"):
                host.allowlist.check(kwargs["target"]["host"])
            workload = kwargs["workload"]
            kwargs["progress"] = lambda values: send({**reply, "workload": workload, "progress": values})
            kwargs["locustfile_dir"] = host.locustfile_dir
        elif task is host_counters:
            kwargs["on_sample"] = lambda sample: send({**reply, "sample": sample})
        elif task is end_trial:
            kwargs["ended"] = host.ended_trials
        reply["result"] = task(**kwargs)
        reply["ok"] = True
    except TargetRefused as exc:
        reply["ok"], reply["error"], reply["refused"] = False, f"refused: {exc}", True
    except Exception as exc:  # reported to the controller, never fatal to the agent
        reply["ok"], reply["error"] = False, f"{type(exc).__name__}: {exc}"
    send(reply)
