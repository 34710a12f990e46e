"""`vtax agent`: a Celery worker in a guest VM that consumes its own queue and runs the agent's tasks.

It registers its identity under `vtax:agent:<name>` and refreshes it every 2 s (the heartbeat). Tasks run
in a thread pool: they mostly wait on child processes, and one agent must serve and load at once.

A message it must not run (unsigned, signed by a certificate it does not trust, of another content type, the
same request a second time, a reply list that is not a controller's) is refused with one log line naming
what the message claims about its origin, and the agent goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import redis
from celery.exceptions import SecurityError
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed, DecodeError

from agent.broker import HEARTBEAT_S, HEARTBEAT_TTL_S, Keys, make_app, queue_for, redis_client
from agent.edge import AgentHost, TaskSlots, execute
from agent.guests import local_guests
from agent.identity import identity
from agent.kept import Kept
from agent.safety import Allowlist, RateLimits
from agent.settings import DEFAULT_TASK_SLOTS, BrokerConfig, kept_dir
from agent.sink import InfluxConfig, InfluxSink
from agent.wire import TASK_NAMES, AgentIdentity, Message, Request, TaskRequest

log = logging.getLogger("vtax.agent")
REPLY_RETRY_S = 60.0  # how long a finished task keeps trying to hand its reply to a restarting broker
REPLY_TTL_S = 3600
CONTROL_THREADS = 8  # threads beyond the load tasks' for pings, serve and end_trial: never starved by load


class BrokerLink:
    """This agent's Redis connection: replies that survive a broker restart, cancel flags, heartbeats."""

    def __init__(self, config: BrokerConfig) -> None:
        self.redis = redis_client(config, "agent")
        self.keys = Keys(config.prefix)
        self._cancel_cache: dict[str, tuple[float, bool]] = {}

    def send(self, reply_to: str, message: Message) -> None:
        """Push one message to the controller's reply list; a reply is retried, progress and streamed samples
        are not (the reply carries every sample)."""
        body = json.dumps(message)
        give_up = time.monotonic() + (REPLY_RETRY_S if "ok" in message else 0)
        while True:
            try:
                with self.redis.pipeline() as pipe:
                    pipe.rpush(reply_to, body).expire(reply_to, REPLY_TTL_S).execute()
                return
            except redis.RedisError as exc:
                if time.monotonic() >= give_up:
                    log.error("could not deliver %s for request %s: %s", reply_to, message.get("id"), exc)
                    return
                time.sleep(0.5)

    def is_cancelled(self, run_id: str) -> bool:
        """Whether the controller cancelled `run_id`; asked at most every 0.25 s per run."""
        if not run_id:
            return False
        checked, value = self._cancel_cache.get(run_id, (0.0, False))
        if time.monotonic() - checked >= 0.25:
            try:
                value = bool(self.redis.exists(self.keys.cancel(run_id)))
            except redis.RedisError:
                value = False  # the deadline still stops the load if the broker is gone
            self._cancel_cache[run_id] = (time.monotonic(), value)
        return value

    def heartbeat_forever(
        self, name: str, ident: AgentIdentity, stop: threading.Event, sink: InfluxSink | None = None
    ) -> None:
        key = self.keys.agent(name)
        while not stop.is_set():
            beat: AgentIdentity = {**ident, "heartbeat": time.time(), "sink": sink.stats() if sink else None}
            guests = local_guests()
            if guests:
                beat["guests"] = guests
            try:
                self.redis.set(key, json.dumps(beat), ex=HEARTBEAT_TTL_S)
            except redis.RedisError as exc:
                log.warning("heartbeat failed (broker unreachable?): %s", exc)
            stop.wait(HEARTBEAT_S)
        with contextlib.suppress(redis.RedisError):
            self.redis.delete(key)


def run_agent(
    *,
    broker: BrokerConfig,
    names: list[str],
    zone: str | None,
    allow: list[str],
    address: str | None = None,
    vm_uuid: str | None = None,
    locustfiles: Path | None = None,
    influx: InfluxConfig | None = None,
    concurrency: int = DEFAULT_TASK_SLOTS,
    limits: RateLimits | None = None,
) -> None:
    """Register, heartbeat, and serve these agents' queues until SIGTERM/SIGINT.

    Usually one name; several let one worker process stand in for many agents (scale tests). `concurrency`
    load tasks run at once, shared by all the names; one more is refused.
    """
    allowlist = Allowlist(allow)
    link = BrokerLink(broker)
    # a spool directory belongs to one process: this agent's own, under the configured one
    sink = InfluxSink(influx.model_copy(update={"spool_dir": influx.spool_dir / names[0]})) if influx else None
    slots = TaskSlots(concurrency)
    hosts = {
        name: AgentHost(
            name=name,
            allowlist=allowlist,
            limits=limits or RateLimits(),
            is_cancelled=link.is_cancelled,
            locustfile_dir=locustfiles,
            sink=sink,
            slots=slots,
            kept=Kept(kept_dir(name)),  # each agent its own: what one hands back is only what it ran
        )
        for name in names
    }
    app = make_app(broker, "agent")
    seen = SeenRequests()
    for task_name in TASK_NAMES:
        _register_task(app, task_name, hosts, link, seen)
    stop = threading.Event()
    allowed = [str(n) for n in allowlist.networks]
    beats = [
        threading.Thread(
            target=link.heartbeat_forever,
            args=(
                name,
                identity(
                    name=name,
                    zone=zone,
                    allow=allowed,
                    address=address,
                    vm_uuid=vm_uuid,
                    max_tasks=concurrency,
                    signed=broker.certs is not None,
                ),
                stop,
                sink,
            ),
            name=f"heartbeat-{name}",
            daemon=True,
        )
        for name in names
    ]
    for beat in beats:
        beat.start()
    log.info("agent %s serving %d queue(s) (allow %s)", names[0], len(names), allowlist)
    if broker.certs is None:
        log.warning(
            "tasks are not signed: anyone who can write to the broker can make this agent send load within its "
            "allowlist (see docs/how-to/secure-deployment.md)"
        )
    worker = app.Worker(
        queues=[queue_for(name) for name in names],
        pool="threads",
        concurrency=concurrency + CONTROL_THREADS,
        hostname=f"{names[0]}@{socket.gethostname()}",
        loglevel="INFO",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,  # Celery's own heartbeat is a pub/sub event; ours is the key above
        consumer_cls=RefusingConsumer,
    )
    try:
        worker.start()
    finally:
        stop.set()
        for beat in beats:
            beat.join(5)
        if sink is not None:
            sink.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class RefusingConsumer(Consumer):
    """Celery's consumer, with a message that cannot be decoded or verified refused in one log line, never a
    traceback and never the end of the consumer."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().create_task_handler(*args, **kwargs)

        def refusing(message: Any) -> Any:
            try:
                return handle(message)
            except (SecurityError, ContentDisallowed, DecodeError) as exc:
                return self.on_decode_error(message, exc)

        return refusing

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if isinstance(exc, ContentDisallowed):  # unsigned where signatures are required, or pickle and the like
            self.on_decode_error(message, exc)
        else:
            super().on_invalid_task(body, message, exc)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        headers = message.headers if isinstance(message.headers, dict) else {}
        log.error(
            "refused a message (%s: %s): task %s, id %s, claimed origin %s, content type %s",
            _why_refused(exc),
            exc,
            headers.get("task"),
            headers.get("id"),
            headers.get("origin"),
            message.content_type,
        )
        message.ack()


def _why_refused(exc: Exception) -> str:
    if isinstance(exc, ContentDisallowed):
        return "unsigned or of another content type"
    # kombu hands a serializer's failure on as DecodeError(that exception): the auth serializer's is SecurityError
    cause = exc.args[0] if isinstance(exc, DecodeError) and exc.args else exc
    return "bad signature" if isinstance(cause, SecurityError) else "not decodable"


class SeenRequests:
    """Requests this agent has taken, by reply list and id, until their deadline: the same message put on
    the queue again (a replay by someone who can write to the broker) runs nothing a second time."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def first_time(self, reply_to: str, request_id: int, deadline: float) -> bool:
        now = time.time()
        with self._lock:
            if len(self._until) > 10_000:
                self._until = {key: until for key, until in self._until.items() if until > now}
            if (reply_to, request_id) in self._until:
                return False
            self._until[(reply_to, request_id)] = max(deadline, now + 3600)
            return True


def _register_task(app: Any, task_name: str, hosts: dict[str, AgentHost], link: BrokerLink, seen: SeenRequests) -> None:
    def run(*, id: int, agent: str, reply_to: str, kwargs: TaskRequest, clock_offset: float = 0.0) -> None:
        """The Celery task: its arguments are a wire.CeleryRequest."""
        host = hosts.get(agent)
        if host is None:
            log.error("request %s for agent %r, which this worker is not; ignored", id, agent)
            return
        if not link.keys.is_reply_list(reply_to):
            log.error(
                "request %s (%s) names %r as its reply list, which no controller does; refused", id, task_name, reply_to
            )
            return
        deadline = kwargs.get("deadline") if isinstance(kwargs, dict) else None
        if not seen.first_time(
            reply_to, id, float(deadline) + clock_offset if isinstance(deadline, float | int) else 0.0
        ):
            log.error("request %s (%s) on %s arrived a second time (a replay?); refused", id, task_name, reply_to)
            return
        request: Request = {"id": id, "task": task_name, "kwargs": kwargs, "clock_offset": clock_offset}
        execute(request, host, lambda message: link.send(reply_to, message))

    app.task(name=task_name)(run)
