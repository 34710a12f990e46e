"""Task functions an agent executes, addressed by name; the same functions serve both engines.

Arguments and results are JSON-able. Parameters are validated again here with the workload's own model:
nothing from the wire is trusted, and nothing from it is ever unpickled or executed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import workloads
from workloads.base import DeadlineExceeded, RunContext, Sample, Target, WorkloadError


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
    progress: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Wait for the common start, run the load, and return its samples and summary.

    Never raises for a workload failure: the status says what happened and the samples measured so far
    are kept. The deadline is enforced here, by the agent, whatever the controller does. `progress` is
    supplied by the process hosting the agent (never by a message) and receives live readings.
    """
    module = workloads.get(kind)
    checked = module.Params.model_validate(params)
    cpu_before = time.process_time()
    time.sleep(max(0.0, start_at - time.time()))
    started_at = time.time()
    samples: list[Sample] = []
    status, reason = "ok", ""
    ctx = RunContext(start_at=start_at, duration=duration, deadline=deadline, target=target)
    if progress is not None:
        ctx = dataclasses.replace(ctx, progress=progress)
    try:
        samples.extend(module.run(checked, ctx))
    except DeadlineExceeded as exc:
        status, reason = "deadline_exceeded", str(exc)
    except WorkloadError as exc:
        status, reason = "error", str(exc)
    except Exception as exc:  # an agent survives any workload bug and reports it
        status, reason = "error", f"{type(exc).__name__}: {exc}"
    return {
        "agent": agent,
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


def ping() -> dict[str, float]:
    """Liveness and clock reading."""
    return {"time": time.time()}


TASKS: dict[str, Callable[..., Any]] = {
    "vtax.serve": serve,
    "vtax.run_workload": run_workload,
    "vtax.ping": ping,
}
