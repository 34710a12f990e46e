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
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import redis

from agent.broker import Keys, make_app, queue_for, redis_client
from agent.identity import version
from agent.settings import BrokerConfig
from agent.trust import Side
from agent.urls import redact
from agent.wire import AgentIdentity, CeleryRequest, TaskRequest
from controller.engine import AgentKilled, Call, Engine, ProgressCallback, SampleCallback, Sent
from controller.errors import InfrastructureError, InputError

LOST_AFTER_S = 10.0
SEND_THREADS = 8  # tasks sent at once: each send waits mostly on the broker's answer, so threads overlap them
PARALLEL_FROM = 64  # calls; fewer go one after the other (threads' handoffs cost a few agents' clock precision)
DRAIN = 256  # replies taken off the reply list per round trip once one has arrived


def connect(broker: BrokerConfig, side: Side = "controller") -> redis.Redis:
    """A Redis client for `broker`; InputError (exit 2) when its certificates are wrong or it refuses the user,
    InfrastructureError (exit 3) when it cannot be reached."""
    try:
        client = redis_client(broker, side, connect_timeout=3)
    except ValueError as exc:
        raise InputError(f"--broker-certs: {exc}") from None
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise InputError(
            f"broker {broker.url}: {exc} (user {broker.username or 'default'}; VTAX_BROKER_PASSWORD)"
        ) from None
    except redis.exceptions.NoPermissionError as exc:
        raise InputError(f"broker {broker.url}: user {broker.username or 'default'} may not: {exc}") from None
    except redis.RedisError as exc:
        raise InfrastructureError(
            f"broker {broker.url} is unreachable: {_tls_hint(broker, redact(str(exc)))}"
        ) from None
    return client


def _tls_hint(broker: BrokerConfig, error: str) -> str:
    """Redis' and OpenSSL's words, with what to do where a TLS setting is the likely cause."""
    if "certificate verify failed" in error:
        return f"{error}; the broker's TLS certificate is not signed by the CA in --broker-certs (ca.crt)"
    if broker.tls and ("Connection reset" in error or "EOF" in error):
        return f"{error}; does the broker ask for a client certificate (tls-auth-clients) that --broker-certs lacks?"
    if not broker.tls and "Connection reset" in error:
        return f"{error}; is it a TLS port? then use rediss://"
    return error


def wait_for_broker(broker: BrokerConfig, timeout: float = 10.0) -> redis.Redis:
    """A client for a broker that is starting: retried until it answers or `timeout` passes."""
    give_up = time.monotonic() + timeout
    while True:
        try:
            return connect(broker)
        except InfrastructureError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.05)


def list_agents(client: redis.Redis, keys: Keys) -> list[AgentIdentity]:
    """Identities of the agents whose heartbeat is current, sorted by name."""
    agents = []
    for key in client.scan_iter(match=keys.agent_pattern, count=1000):
        raw = client.get(key)
        if raw is not None:
            agents.append(json.loads(raw))
    return sorted(agents, key=lambda a: a["name"])


def registered_agents(broker: BrokerConfig) -> list[AgentIdentity]:
    """The agents registered with `broker` now (`vtax agents`, the inventory, the zone audit)."""
    return list_agents(connect(broker), Keys(broker.prefix))


class CeleryEngine(Engine):
    """Reaches named agents through Celery; the agents must already be running and registered."""

    kind = "distributed"

    def __init__(
        self,
        broker: BrokerConfig,
        agents: list[str],
        *,
        on_progress: ProgressCallback | None = None,
        lost_after: float = LOST_AFTER_S,
        mixed_versions: bool = False,
    ) -> None:
        super().__init__(on_progress=on_progress)
        self.broker = broker
        self._names = agents
        self._lost_after = lost_after
        self._mixed_versions = mixed_versions
        self._keys = Keys(broker.prefix)
        self._reply_key = self._keys.replies(secrets.token_hex(8))
        self._stop = threading.Event()
        self._last_seen: dict[str, float] = {}
        self._lost: set[str] = set()
        self._back = threading.Condition()  # notified when a lost agent's heartbeat resumes
        self.identities: dict[str, AgentIdentity] = {}
        self._redis: redis.Redis | None = None
        try:
            self._app = make_app(broker, "controller")
        except ValueError as exc:
            raise InputError(f"--broker-certs: {exc}") from None
        self._senders = ThreadPoolExecutor(max_workers=SEND_THREADS, thread_name_prefix="send")
        self._threads = [
            threading.Thread(target=self._receive, name="replies", daemon=True),
            threading.Thread(target=self._watch, name="heartbeats", daemon=True),
        ]

    def __enter__(self) -> CeleryEngine:
        self._redis = connect(self.broker)
        live = {a["name"]: a for a in list_agents(self._redis, self._keys)}
        missing = [name for name in self._names if name not in live]
        if missing:
            raise InfrastructureError(
                f"agents not registered with {self.broker.url}: {', '.join(missing)} (see `vtax agents --broker ...`)"
            )
        self.identities = {name: live[name] for name in self._names}
        self._check_signing()
        self._check_versions()
        now = time.monotonic()
        self._last_seen = dict.fromkeys(self._names, now)
        for thread in self._threads:
            thread.start()
        return self

    def _check_signing(self) -> None:
        """Refuse, before anything is sent, to run with agents that would refuse every task: they verify
        signatures and this controller signs none, or the other way round."""
        signing = self.broker.certs is not None
        verifying = sorted(name for name, ident in self.identities.items() if ident.get("signed"))
        if not signing and verifying:
            raise InputError(
                f"agents {', '.join(verifying)} run only signed tasks; give this controller its certificate "
                "directory (--broker-certs DIR/controller, or VTAX_BROKER_CERTS)"
            )
        trusting = sorted(set(self.identities) - set(verifying))
        if signing and trusting:
            raise InputError(
                f"agents {', '.join(trusting)} do not verify signatures (started without --broker-certs): "
                "start them with the agent's certificate directory, so that only this controller can make them load"
            )

    def _check_versions(self) -> None:
        """Refuse agents that run another vtax than this controller (exit 3): they may check, measure or
        report differently, and a fleet is kept in step. `--allow-mixed-versions` runs anyway, with a warning
        in the result."""
        mine = version()
        differ = {name: ident.get("vtax") for name, ident in self.identities.items() if ident.get("vtax") != mine}
        if differ and not self._mixed_versions:
            listed = ", ".join(f"{name} ({found or 'unknown'})" for name, found in sorted(differ.items()))
            raise InfrastructureError(
                f"agents run another vtax than this controller ({mine}): {listed}; install {mine} on them, "
                "or run with --allow-mixed-versions"
            )

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
                declare=[],  # the agent declared its queue as it began to consume: two round trips a send saved
                argsrepr="",
                kwargsrepr="",  # no copy of the request in the headers (Celery's repr of it for monitors)
            )
        except Exception as exc:  # kombu raises many kinds when the broker is gone for good
            self._fail_agent(agent, f"unreachable: {exc}")
        return future

    def _send_all(self, calls: Sequence[Call]) -> list[Sent]:
        """Sent by a few threads at once: a send spends most of its time waiting for the broker (hundreds of
        them one after the other outlasted the lead, and the last agents started late)."""
        if len(calls) < PARALLEL_FROM:
            return super()._send_all(calls)
        return list(self._senders.map(self._send, calls))

    def kill(self, agent: str, reason: str) -> None:
        """A remote agent cannot be killed from here; its own deadline stops its load. Stop waiting for it."""
        self._fail_agent(agent, f"given up on: {reason}", AgentKilled)

    def cancel(self, run_id: str) -> None:
        assert self._redis is not None
        with contextlib.suppress(redis.RedisError):  # if the broker is gone, the agents' deadlines stop the load
            self._redis.set(self._keys.cancel(run_id), 1, ex=3600)

    def close(self) -> None:
        self._stop.set()
        self._senders.shutdown(wait=True)
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
            if item is None:
                continue
            self._deliver(item[1])
            for raw in self._drain():
                self._deliver(raw)

    def _drain(self) -> list[bytes]:
        """The replies waiting behind the one just taken, a batch per round trip (a thousand agents answer at
        once; one round trip each kept the controller waiting on the broker)."""
        assert self._redis is not None
        taken: list[bytes] = []
        while True:
            try:
                batch = self._redis.lpop(self._reply_key, DRAIN)
            except redis.RedisError:
                return taken  # the next blpop tries again
            if not batch:
                return taken
            taken += batch
            if len(batch) < DRAIN:
                return taken

    def _watch(self) -> None:
        """Fail the calls of agents whose heartbeat has not changed for `lost_after` seconds.

        A heartbeat counts when its value changes, as seen by this controller: no clock comparison, and a
        dead agent's key, which lingers until its TTL runs out, does not count as alive.
        """
        assert self._redis is not None
        beats: dict[str, bytes | None] = dict.fromkeys(self._names)
        while not self._stop.wait(1.0):
            try:
                values = self._redis.mget([self._keys.agent(name) for name in self._names])
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
