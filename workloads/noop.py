"""No load at all: the agents only start together and wait out the trial.

Measures vtax's own orchestration (dispatch, collection, start skew across many agents) without
disturbing the host; `benchmarks/dispatch.py` and `benchmarks/start_skew.py` use it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from workloads.base import MetricInfo, RunContext, Sample, Target, WorkloadParams

KIND = "noop"
HAS_SERVER = False
READY_S = 0.0  # nothing to start
METRICS: dict[str, MetricInfo] = {}


class NoopParams(WorkloadParams):
    """No parameters."""


Params = NoopParams


def serve(params: NoopParams, *, bind: str, deadline: float) -> Target:
    raise NotImplementedError("the noop workload has no server side")


def external_target(params: NoopParams) -> Target | None:
    return None


def run(params: NoopParams, ctx: RunContext) -> Iterator[Sample]:
    ctx.wait_for_start()
    end = ctx.start_at + ctx.duration
    while time.time() < end:
        ctx.check_stop()
        time.sleep(min(0.1, max(0.0, end - time.time())))
    yield from ()


def summarize(params: NoopParams, samples: list[Sample]) -> dict[str, float]:
    return {}
