"""Engines carry task requests to agents and their replies back; the run loop does not know which it uses.

Requests and replies are the JSON messages of `agent.wire` in both engines: a request, its one reply,
progress messages while load runs and streamed samples while host counters are taken. Every request carries
the agent's clock offset, which the engine is given once the clocks are measured; the agent converts times at
its edge, so everything that comes back is in the controller's clock.
The embedded engine runs each agent as a local child process; the distributed engine is in
`controller.distributed`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from agent.local import agent_main
from agent.settings import DEFAULT_TASK_SLOTS, InfluxConfig
from agent.wire import AgentIdentity, HostSample, MalformedMessage, Request, TaskRequest, check_reply, parse_message
from controller.errors import InfrastructureError, InputError
from controller.spec import Experiment

log = logging.getLogger("vtax.engine")

# before the first batch of load tasks, 4 × as long per task as the clock pings took: a first batch to 1,000
# agents on 2 cores took over 3 × as long (each agent's first load task wakes more of it than a ping does)
COLD_FACTOR = 4.0

ProgressCallback = Callable[[str, str, dict[str, float]], None]
SampleCallback = Callable[[HostSample], None]


class AgentLost(InfrastructureError):
    """An agent died, was killed, or stopped answering before it replied."""


class AgentKilled(AgentLost):
    """The controller gave up on an agent that overran the trial deadline."""


class AgentRefused(InputError):
    """An agent refused a task: its allowlist does not cover the target (a configuration error)."""


@dataclass(frozen=True)
class Call:
    """One task request to send: to which agent, which task (a name of agent.wire), its request, and where the
    samples it streams go."""

    agent: str
    task: str
    kwargs: TaskRequest
    on_sample: SampleCallback | None = None


@dataclass
class Sent:
    """A sent call: the future of its reply, when (controller clock) it was handed to the transport, and when its
    reply arrived (0 until then)."""

    future: Future[Any]
    sent_at: float
    replied_at: float = 0.0

    def __post_init__(self) -> None:
        self.future.add_done_callback(self._replied)

    def _replied(self, _future: Future[Any]) -> None:
        self.replied_at = time.time()


@dataclass(frozen=True)
class _Pending:
    """A call waiting for its reply."""

    agent: str
    task: str
    future: Future[Any]
    on_sample: SampleCallback | None


class Engine(ABC):
    """Pending calls and reply routing, shared by both engines."""

    kind = "abstract"

    def __init__(self, *, on_progress: ProgressCallback | None = None) -> None:
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.on_progress = on_progress
        self._offsets: dict[str, float] = {}
        self._per_call_s: dict[str, float] = {}  # sending time per call of the last batch of each task

    def use_clocks(self, offsets: Mapping[str, float]) -> None:
        """Each agent's clock offset (agent − controller), sent with every later request to it."""
        self._offsets = dict(offsets)

    def _request(self, request_id: int, agent: str, task: str, kwargs: TaskRequest) -> Request:
        return {"id": request_id, "task": task, "kwargs": kwargs, "clock_offset": self._offsets.get(agent, 0.0)}

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _register(self, agent: str, task: str, on_sample: SampleCallback | None) -> tuple[int, Future[Any]]:
        future: Future[Any] = Future()
        request_id = next(self._ids)
        with self._lock:
            self._pending[request_id] = _Pending(agent, task, future, on_sample)
        return request_id, future

    def _deliver(self, raw: str | bytes) -> None:
        """Route one reply, progress message or streamed sample to whoever waits for it. What does not fit the
        wire is logged and dropped; a reply whose result does not fit its task fails that call only. Nothing an
        agent sends can stop the thread that calls this."""
        try:
            message = parse_message(raw)
        except MalformedMessage as exc:
            log.warning("dropped a message that does not fit the wire: %s", exc)
            return
        try:
            self._route(message)
        except Exception:  # a listener's or a bug's: logged, and the next message is read
            log.exception("could not deliver a message from agent %r", message.get("agent"))

    def _route(self, message: Any) -> None:
        if "progress" in message:
            if self.on_progress is not None:
                self.on_progress(message["agent"], message["workload"], message["progress"])
            return
        if "sample" in message:
            with self._lock:
                entry = self._pending.get(message["id"] or 0)
            if entry is not None and entry.on_sample is not None and entry.agent == message["agent"]:
                entry.on_sample(message["sample"])
            return
        reply = message
        with self._lock:
            entry = self._pending.get(reply["id"] or 0)
            if entry is None or entry.agent != reply["agent"]:
                return  # a reply from an agent already given up on, or one that answers for another
            del self._pending[reply["id"]]
        agent = repr(reply["agent"])
        if not reply["ok"]:
            error = reply.get("error", "failed without saying why")
            failure = AgentRefused(f"agent {agent} {error}") if reply.get("refused") else None
            entry.future.set_exception(failure or InfrastructureError(f"agent {agent}: {error}"))
            return
        try:
            entry.future.set_result(check_reply(entry.task, reply.get("result")))
        except MalformedMessage as exc:
            entry.future.set_exception(InfrastructureError(f"agent {agent} sent a reply that does not fit: {exc}"))

    def _fail_agent(self, agent: str, reason: str, error: type[AgentLost] = AgentLost) -> None:
        """Fail every call pending on `agent`."""
        with self._lock:
            lost = [rid for rid, entry in self._pending.items() if entry.agent == agent]
            futures = [self._pending.pop(rid).future for rid in lost]
        for future in futures:
            future.set_exception(error(f"agent {agent!r} {reason}"))

    def identity(self, agent: str) -> AgentIdentity | None:
        """What the agent registered about itself, where the engine knows it."""
        return None

    def lost_agents(self) -> list[str]:
        """The agents this engine cannot reach now (their calls fail at once)."""
        return []

    def task_limit(self, agent: str) -> tuple[str, int] | None:
        """The process `agent` runs in (several agents may share one) and how many load tasks it runs at once;
        None where the engine does not know."""
        return None

    def rejoin(self, agents: list[str], timeout: float) -> list[str]:
        """Wait up to `timeout` seconds for lost `agents` to be back; returns those that are not."""
        return agents

    def call_all(self, calls: Sequence[Call]) -> list[Sent]:
        """Send every call (in parallel where the engine can), in order of `calls`, and note how long sending
        took: `send_estimate` predicts the next batch from it."""
        began = time.monotonic()
        sent = self._send_all(calls)
        if calls and len({call.task for call in calls}) == 1:
            self._per_call_s[calls[0].task] = (time.monotonic() - began) / len(calls)
        return sent

    def send_estimate(self, task: str, calls: int) -> float:
        """Seconds that sending `calls` calls of `task` at once is expected to take: as its last batch did; a task
        not sent in a batch yet, COLD_FACTOR × as the slowest task that was (0 before any)."""
        if task in self._per_call_s:
            return self._per_call_s[task] * calls
        return COLD_FACTOR * max(self._per_call_s.values(), default=0.0) * calls

    def _send_all(self, calls: Sequence[Call]) -> list[Sent]:
        """One call after the other; an engine that can send in parallel does."""
        return [self._send(call) for call in calls]

    def _send(self, call: Call) -> Sent:
        sent_at = time.time()
        return Sent(self.call(call.agent, call.task, call.kwargs, on_sample=call.on_sample), sent_at)

    @abstractmethod
    def call(
        self, agent: str, task: str, kwargs: TaskRequest, *, on_sample: SampleCallback | None = None
    ) -> Future[Any]:
        """Send a task (a name of agent.wire) with its request; a running workload's live readings reach
        `on_progress(agent, workload, values)`, and
        the samples a task streams (host counters) reach this call's `on_sample` until its reply arrives."""

    @abstractmethod
    def kill(self, agent: str, reason: str) -> None:
        """Give up on an agent that does not answer: fail its calls and stop what can be stopped."""

    @abstractmethod
    def cancel(self, run_id: str) -> None:
        """Ask every agent to stop the load of `run_id` now (Ctrl-C)."""

    @abstractmethod
    def close(self) -> None:
        """Release the engine's resources."""


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """An embedded agent's own configuration, which no message can change."""

    allow: list[str]
    locustfiles: str | None = None
    influx: InfluxConfig | None = None


class EmbeddedEngine(Engine):
    """Named local agents, each a child process in its own process group."""

    kind = "embedded"

    def __init__(self, agents: dict[str, AgentSettings], *, on_progress: ProgressCallback | None = None) -> None:
        """`agents` maps each agent's name to what its host process sets: allowlist, locustfile directory."""
        super().__init__(on_progress=on_progress)
        self._context = multiprocessing.get_context("spawn")
        self._outbox = self._context.Queue()
        self._agents: dict[str, tuple[Any, Any]] = {}  # name -> (process, inbox)
        self._settings = agents
        self._receiver = threading.Thread(target=self._receive, name="engine-replies", daemon=True)

    @classmethod
    def for_experiment(cls, experiment: Experiment, influx: InfluxConfig | None = None) -> EmbeddedEngine:
        """Local agents as the spec describes them, each writing to `influx` when given."""
        return cls(
            {a.name: AgentSettings(allow=a.allow, locustfiles=a.locustfiles, influx=influx) for a in experiment.agents}
        )

    def __enter__(self) -> EmbeddedEngine:
        for name in self._settings:
            self._spawn(name)
        self._receiver.start()
        return self

    def _spawn(self, name: str) -> None:
        inbox = self._context.Queue()
        settings = self._settings[name]
        process = self._context.Process(
            target=agent_main,
            args=(name, settings.allow, settings.locustfiles, settings.influx, inbox, self._outbox, os.getpid()),
            name=f"vtax-agent-{name}",
            daemon=True,
        )
        process.start()
        self._agents[name] = (process, inbox)

    def call(
        self, agent: str, task: str, kwargs: TaskRequest, *, on_sample: SampleCallback | None = None
    ) -> Future[Any]:
        process, inbox = self._agents[agent]
        request_id, future = self._register(agent, task, on_sample)
        if not process.is_alive():
            self._fail_agent(agent, f"is not running (exit code {process.exitcode})")
            return future
        inbox.put(json.dumps(self._request(request_id, agent, task, kwargs)))
        return future

    def lost_agents(self) -> list[str]:
        return [name for name, (process, _) in self._agents.items() if not process.is_alive()]

    def task_limit(self, agent: str) -> tuple[str, int] | None:
        return agent, DEFAULT_TASK_SLOTS

    def rejoin(self, agents: list[str], timeout: float) -> list[str]:
        """A local agent that died is started again at once."""
        for name in agents:
            self._terminate(name)  # whatever it left running
            _release(self._agents[name][1])
            self._spawn(name)
        return []

    def kill(self, agent: str, reason: str) -> None:
        """Kill the agent with everything it started, fail its pending calls, and start a fresh one."""
        self._terminate(agent)
        self._fail_agent(agent, f"killed: {reason}", AgentKilled)
        _release(self._agents[agent][1])
        self._spawn(agent)

    def cancel(self, run_id: str) -> None:
        for name in self._agents:
            self._terminate(name)

    def close(self) -> None:
        """Stop every agent; whatever load is still running (an interrupted trial) dies with its group."""
        for name, (process, inbox) in self._agents.items():
            if process.is_alive():
                inbox.put(None)
                process.join(2)
            self._terminate(name)
            _release(inbox)
        self._outbox.put(None)
        if self._receiver.is_alive():
            self._receiver.join(2)
        _release(self._outbox)

    def _terminate(self, agent: str) -> None:
        """SIGKILL the agent's process group: the agent and the load it started."""
        process, _ = self._agents[agent]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.join(5)

    def _receive(self) -> None:
        while (message := self._outbox.get()) is not None:
            self._deliver(message)


def _release(queue: Any) -> None:
    """Close a queue and its feeder thread now, so that its semaphores are released with it rather than left
    to the interpreter's exit (where the resource tracker reports them as leaked)."""
    queue.close()
    queue.join_thread()
