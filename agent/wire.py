"""The wire: every message that crosses a process between the controller and its agents.

The task names, each task's request and reply, the envelopes they travel in, and the records they carry
(workload samples, host samples, agent results, trial records). Both engines and the agent build and read
messages only through these types; a test checks that every request the controller builds binds to its
task's signature.

Times are unix seconds in the controller's clock everywhere on the wire. An agent converts to its own clock
and back once, at its edge (`agent.edge`), with the request envelope's `clock_offset` (agent clock − controller
clock, measured by the controller at run start).

Messages are JSON: nothing here is ever pickled, and nothing that arrives is executed. What arrives is
checked against these types before anyone reads it (`parse_message`, `check_reply`, `check_request`): a message
that does not fit is an error of its sender, never of the reader.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any, Literal, NotRequired

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic validates only this TypedDict on Python < 3.12

from workloads.base import Sample, Target

SERVE = "vtax.serve"
RUN_WORKLOAD = "vtax.run_workload"
HOST_COUNTERS = "vtax.host_counters"
PING = "vtax.ping"
END_TRIAL = "vtax.end_trial"
KEPT = "vtax.kept"
TASK_NAMES = (SERVE, RUN_WORKLOAD, HOST_COUNTERS, PING, END_TRIAL, KEPT)

JSONObject = dict[str, object]  # a workload's parameters as JSON; the agent validates them with the kind's model
WorkloadStatus = Literal["ok", "error", "deadline_exceeded", "cancelled", "refused", "lost", "killed"]
HostStatus = Literal["ok", "cancelled", "deadline_exceeded"]


# --- records ---------------------------------------------------------------------------------------------


class TrialTags(TypedDict):
    """What identifies a trial in every stream (InfluxDB tags, cancellation)."""

    run: str
    trial: int
    condition: str
    repetition: int


class ClientTags(TrialTags):
    """A load client's tags: the trial's, and which workload on which side of which zone."""

    zone: str | None
    workload: str
    kind: str
    role: str


class ApplianceProcesses(TypedDict):
    pattern: str
    processes: int  # how many processes matched in this sample


class HostSample(TypedDict):
    """One interval of one host's counters: 1 s from a Linux host, 20 s from vCenter."""

    t: float  # start of the interval
    dt: float  # its length, seconds
    host: str
    values: dict[str, float]  # metric name (controller.metrics) → value
    per_core: NotRequired[dict[str, list[float]]]
    net: NotRequired[dict[str, dict[str, float]]]  # interface → counter → per-second value
    appliance: NotRequired[ApplianceProcesses]
    agent: NotRequired[str]  # the hypervisor agent that measured it (set by the controller)


class AgentResult(TypedDict):
    """One workload's result on one agent for one trial."""

    agent: str
    workload: str
    status: WorkloadStatus
    reason: str
    samples: list[Sample]
    summary: dict[str, float]
    host: NotRequired[str]
    kind: NotRequired[str]
    start_at: NotRequired[float]  # the common start it was given
    started_at: NotRequired[float]  # when its load actually started
    ended_at: NotRequired[float]
    agent_cpu_s: NotRequired[float]
    agent_rss_mb: NotRequired[float]  # the agent process's resident memory as the task ended (a soak's leak check)
    start_skew_s: NotRequired[float]  # started_at − start_at (set by the controller)
    received_at: NotRequired[float]  # when its agent took up the request: after the start is too late


class SinkStats(TypedDict):
    """What an agent's InfluxDB sink has done, reported in its heartbeat."""

    sent: int
    rejected: int
    spooled_bytes: int
    spool_dropped: int
    last_error: str | None


class MachineInfo(TypedDict):
    """A machine and the versions of what measures on it: enough to tell, later, what produced a number."""

    hostname: str
    kernel: str
    cpu_model: str
    cores: int | None
    memory_bytes: int
    python: str
    iperf3: str | None
    locust: str | None
    vtax: str | None


class GuestVm(TypedDict):
    """A guest a Linux/KVM hypervisor runs (its QEMU process's -uuid and -name)."""

    uuid: str
    name: str


class AgentIdentity(MachineInfo):
    """What an agent registers about itself and its machine (the heartbeat's value in Redis)."""

    name: str
    address: str | None
    vm_uuid: str | None
    addresses: list[str]
    zone: str | None
    allow: list[str]
    pid: int
    started: float
    max_tasks: NotRequired[int | None]  # load tasks its process runs at once, shared by its names
    signed: NotRequired[bool]  # it runs only tasks signed by a controller certificate it trusts
    guests: NotRequired[list[GuestVm]]  # on a Linux/KVM hypervisor: the guests it runs now (agent.guests)
    heartbeat: NotRequired[float]  # when this value was written (agent clock)
    sink: NotRequired[SinkStats | None]


class TrialRecord(TypedDict):
    """A trial as the run store keeps it."""

    idx: int
    condition: str
    repetition: int
    status: str  # ok, error, refused, incomplete, killed, interrupted, aborted, cut_short (a soak's, resumed)
    reason: str
    start_at: float | None
    deadline: float | None
    ended: float | None


# --- task requests and replies ---------------------------------------------------------------------------


class ServeRequest(TypedDict):
    kind: str
    params: JSONObject
    bind: str
    deadline: float


class RunWorkloadRequest(TypedDict):
    agent: str
    workload: str
    kind: str
    params: JSONObject
    target: Target | None
    start_at: float
    duration: float
    deadline: float
    tags: ClientTags
    warmup: float
    steady: float
    acked_before: NotRequired[int]  # the run's trials before this one are stored: what the agent kept of them goes


class HostCountersRequest(TypedDict):
    start_at: float
    seconds: float
    deadline: float
    appliance_processes: str | None
    tags: TrialTags
    warmup: float
    steady: float


class HostCountersReply(TypedDict):
    host: str
    status: HostStatus
    samples: list[HostSample]


class PingRequest(TypedDict):
    pass


class PingReply(TypedDict):
    time: float  # the agent's own clock: the one reading that is not converted


class EndTrialRequest(TypedDict):
    run: str
    trial: int


class EndTrialReply(TypedDict):
    ended: bool


class KeptRequest(TypedDict):
    run: str
    forget_before: int  # what the agent kept of the run's trials before this one goes first


class KeptResult(TypedDict):
    """A load task an agent kept on disk (agent.kept): its trial, window and result, in the controller's clock."""

    trial: int
    start_at: float
    deadline: float
    result: AgentResult


class KeptReply(TypedDict):
    results: list[KeptResult]


TaskRequest = ServeRequest | RunWorkloadRequest | HostCountersRequest | PingRequest | EndTrialRequest | KeptRequest
TaskReply = Target | AgentResult | HostCountersReply | PingReply | EndTrialReply | KeptReply

REQUESTS: dict[str, type] = {
    SERVE: ServeRequest,
    RUN_WORKLOAD: RunWorkloadRequest,
    HOST_COUNTERS: HostCountersRequest,
    PING: PingRequest,
    END_TRIAL: EndTrialRequest,
    KEPT: KeptRequest,
}
REPLIES: dict[str, type] = {
    SERVE: Target,
    RUN_WORKLOAD: AgentResult,
    HOST_COUNTERS: HostCountersReply,
    PING: PingReply,
    END_TRIAL: EndTrialReply,
    KEPT: KeptReply,
}


# --- envelopes -------------------------------------------------------------------------------------------


class Request(TypedDict):
    """A task request as an agent receives it."""

    id: int
    task: str
    kwargs: TaskRequest
    clock_offset: float  # this agent's clock − the controller's


class CeleryRequest(TypedDict):
    """The distributed engine's Celery task arguments: a request, the agent it is for and where to reply."""

    id: int
    agent: str
    reply_to: str
    kwargs: TaskRequest
    clock_offset: float


class Reply(TypedDict):
    """A task's one answer."""

    id: int | None
    agent: str
    ok: bool
    result: NotRequired[object]  # the task's own reply type (REPLIES), checked by `check_reply`
    error: NotRequired[str]
    refused: NotRequired[bool]  # refused as the agent is configured: its allowlist, its concurrency


class Progress(TypedDict):
    """A running workload's live, provisional reading (the samples in the reply are the record)."""

    id: int | None
    agent: str
    workload: str
    progress: dict[str, float]


class Streamed(TypedDict):
    """One host sample streamed while a host_counters task runs."""

    id: int | None
    agent: str
    sample: HostSample


Message = Reply | Progress | Streamed

# the request fields an agent's edge acts on itself rather than pass to the task (`acked_before`: agent.kept)
EDGE_FIELDS = ("acked_before",)

# the request fields that are moments in time, per task: what an agent's edge converts to its own clock
INSTANTS: dict[str, tuple[str, ...]] = {
    SERVE: ("deadline",),
    RUN_WORKLOAD: ("start_at", "deadline"),
    HOST_COUNTERS: ("start_at", "deadline"),
}


# --- checking what arrives ---------------------------------------------------------------------------------


class MalformedMessage(ValueError):
    """A message that does not fit the wire's types; the text says where, briefly."""


@cache
def _adapter(record: Any) -> TypeAdapter[Any]:
    return TypeAdapter(record)


def _checked(record: Any, value: object, what: str) -> Any:
    try:
        return _adapter(record).validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the message"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise MalformedMessage(f"{what}: {where}: {first['msg']}{more}"[:300]) from None


def parse_message(raw: str | bytes) -> Message:
    """A message an agent sent (a reply, progress or a streamed sample), checked; its reply's result is checked
    later, against the task it answers (`check_reply`)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise MalformedMessage(f"not JSON: {bytes(raw[:60]) if isinstance(raw, bytes) else raw[:60]!r}") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(data).__name__}")
    record = Progress if "progress" in data else Streamed if "sample" in data else Reply
    return _checked(record, data, record.__name__.lower())  # type: ignore[no-any-return]


def check_reply(task: str, result: object) -> TaskReply:
    """A task's result as its reply type says it must be."""
    return _checked(REPLIES[task], result, f"{task} reply")  # type: ignore[no-any-return]


def check_request(task: str, kwargs: object) -> TaskRequest:
    """A task's request as its request type says it must be."""
    return _checked(REQUESTS[task], kwargs, f"{task} request")  # type: ignore[no-any-return]
