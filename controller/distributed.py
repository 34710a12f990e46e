"""The distributed engine: agents are Celery workers (`vtax agent`) reached through a Redis broker.

Requests go to each agent's own queue as Celery tasks with JSON bodies; replies and progress come back on
a Redis list this engine names per run. A watchdog reads the agents' heartbeats: an agent silent for
`lost_after` seconds has its pending calls failed, so a dead agent is noticed, never waited on forever.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from concurrent.futures import Future
from typing import Any

import redis

from agent.broker import AGENT_KEY, AGENT_PATTERN, CANCEL_KEY, make_app, queue_for
from agent.urls import check_broker, redact
from agent.wire import AgentIdentity, CeleryRequest, TaskRequest
from controller.engine import AgentKilled, Engine, ProgressCallback, SampleCallback
from controller.errors import InfrastructureError, InputError

LOST_AFTER_S = 10.0


def connect(broker: str) -> redis.Redis:
    """A Redis client for `broker`; InfrastructureError (exit 3) when it cannot be reached."""
    try:
        check_broker(broker)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    client = redis.Redis.from_url(broker, socket_timeout=5, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise InfrastructureError(f"broker {redact(broker)} is unreachable: {redact(str(exc))}") from None
    return client


def wait_for_broker(broker: str, timeout: float = 10.0) -> redis.Redis:
    """A client for a broker that is starting: retried until it answers or `timeout` passes."""
    give_up = time.monotonic() + timeout
    while True:
        try:
            return connect(broker)
        except InfrastructureError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.05)


def list_agents(client: redis.Redis) -> list[AgentIdentity]:
    """Identities of the agents whose heartbeat is current, sorted by name."""
    agents = []
    for key in client.scan_iter(match=AGENT_PATTERN, count=1000):
        raw = client.get(key)
        if raw is not None:
            agents.append(json.loads(raw))
    return sorted(agents, key=lambda a: a["name"])


class CeleryEngine(Engine):
    """Reaches named agents through Celery; the agents must already be running and registered."""

    kind = "distributed"

    def __init__(
        self,
        broker: str,
        agents: list[str],
        *,
        on_progress: ProgressCallback | None = None,
        lost_after: float = LOST_AFTER_S,
    ) -> None:
        super().__init__(on_progress=on_progress)
        self.broker = broker
        self._names = agents
        self._lost_after = lost_after
        self._reply_key = f"vtax:replies:{secrets.token_hex(8)}"
        self._stop = threading.Event()
        self._last_seen: dict[str, float] = {}
        self._lost: set[str] = set()
        self._back = threading.Condition()  # notified when a lost agent's heartbeat resumes
        self.identities: dict[str, AgentIdentity] = {}
        self._redis: redis.Redis | None = None
        self._app = make_app(broker)
        self._threads = [
            threading.Thread(target=self._receive, name="replies", daemon=True),
            threading.Thread(target=self._watch, name="heartbeats", daemon=True),
        ]

    def __enter__(self) -> CeleryEngine:
        self._redis = connect(self.broker)
        live = {a["name"]: a for a in list_agents(self._redis)}
        missing = [name for name in self._names if name not in live]
        if missing:
            raise InfrastructureError(
                f"agents not registered with {redact(self.broker)}: {', '.join(missing)} "
                "(see `vtax agents --broker ...`)"
            )
        self.identities = {name: live[name] for name in self._names}
        now = time.monotonic()
        self._last_seen = dict.fromkeys(self._names, now)
        for thread in self._threads:
            thread.start()
        return self

    def identity(self, agent: str) -> AgentIdentity | None:
        return self.identities.get(agent)

    def task_limit(self, agent: str) -> tuple[str, int] | None:
        registered = self.identities.get(agent)
        if registered is None or not registered.get("max_tasks"):
            return None  # an agent of an older vtax does not say
        return f"{registered['hostname']}:{registered['pid']}", int(registered["max_tasks"] or 0)

    def lost_agents(self) -> list[str]:
        with self._back:
            return sorted(self._lost)

    def rejoin(self, agents: list[str], timeout: float) -> list[str]:
        """Wait until the heartbeat of each of `agents` has resumed (a restarted or resumed agent), or
        `timeout` passes."""
        with self._back:
            self._back.wait_for(lambda: not self._lost.intersection(agents), timeout=timeout)
            return sorted(self._lost.intersection(agents))

    def call(
        self, agent: str, task: str, kwargs: TaskRequest, *, on_sample: SampleCallback | None = None
    ) -> Future[Any]:
        request_id, future = self._register(agent, task, on_sample)
        if agent in self._lost:
            self._fail_agent(agent, f"lost: no heartbeat for {self._lost_after:g} s")
            return future
        request = self._request(request_id, agent, task, kwargs)
        celery: CeleryRequest = {
            "id": request_id,
            "agent": agent,
            "reply_to": self._reply_key,
            "kwargs": request["kwargs"],
            "clock_offset": request["clock_offset"],
        }
        try:
            self._app.send_task(
                task,
                kwargs=celery,
                queue=queue_for(agent),
                retry=True,
            )
        except Exception as exc:  # kombu raises many kinds when the broker is gone for good
            self._fail_agent(agent, f"unreachable: {exc}")
        return future

    def kill(self, agent: str, reason: str) -> None:
        """A remote agent cannot be killed from here; its own deadline stops its load. Stop waiting for it."""
        self._fail_agent(agent, f"given up on: {reason}", AgentKilled)

    def cancel(self, run_id: str) -> None:
        assert self._redis is not None
        with contextlib.suppress(redis.RedisError):  # if the broker is gone, the agents' deadlines stop the load
            self._redis.set(CANCEL_KEY.format(run_id=run_id), 1, ex=3600)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(3)
        if self._redis is not None:
            with contextlib.suppress(redis.RedisError):
                self._redis.delete(self._reply_key)

    def _receive(self) -> None:
        assert self._redis is not None
        while not self._stop.is_set():
            try:
                item = self._redis.blpop([self._reply_key], timeout=1)
            except redis.RedisError:
                time.sleep(0.5)  # broker restarting: keep trying, replies wait in the agents
                continue
            if item is not None:
                self._deliver(item[1])

    def _watch(self) -> None:
        """Fail the calls of agents whose heartbeat has not changed for `lost_after` seconds.

        A heartbeat counts when its value changes, as seen by this controller: no clock comparison, and a
        dead agent's key, which lingers until its TTL runs out, does not count as alive.
        """
        assert self._redis is not None
        beats: dict[str, bytes | None] = dict.fromkeys(self._names)
        while not self._stop.wait(1.0):
            try:
                values = self._redis.mget([AGENT_KEY.format(name=name) for name in self._names])
            except redis.RedisError:
                now = time.monotonic()  # the broker is down: nobody's silence counts against them
                self._last_seen = dict.fromkeys(self._names, now)
                continue
            now = time.monotonic()
            for name, value in zip(self._names, values, strict=True):
                if value is not None and value != beats[name]:
                    beats[name] = value
                    self._last_seen[name] = now
                    if name in self._lost:
                        self._back_again(name, value)
                elif now - self._last_seen[name] >= self._lost_after and name not in self._lost:
                    with self._back:
                        self._lost.add(name)
                    self._fail_agent(name, f"lost: no heartbeat for {self._lost_after:g} s")

    def _back_again(self, name: str, beat: bytes) -> None:
        """A lost agent beats again: its calls go through from now on, with what it now says of itself."""
        with contextlib.suppress(ValueError):
            self.identities[name] = json.loads(beat)
        with self._back:
            self._lost.discard(name)
            self._back.notify_all()
