"""`vtax agent`: a Celery worker in a guest VM that consumes its own queue and runs the agent's tasks.

It registers its identity under `vtax:agent:<name>` and refreshes it every 2 s (the heartbeat). Tasks run
in a thread pool: they mostly wait on child processes, and one agent must serve and load at once.
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

from agent.broker import AGENT_KEY, CANCEL_KEY, HEARTBEAT_S, HEARTBEAT_TTL_S, make_app, queue_for
from agent.edge import AgentHost, TaskSlots, execute
from agent.identity import identity
from agent.kept import Kept
from agent.safety import Allowlist
from agent.settings import DEFAULT_TASK_SLOTS, kept_dir
from agent.sink import InfluxConfig, InfluxSink
from agent.wire import TASK_NAMES, AgentIdentity, Message, Request, TaskRequest

log = logging.getLogger("vtax.agent")
REPLY_RETRY_S = 60.0  # how long a finished task keeps trying to hand its reply to a restarting broker
REPLY_TTL_S = 3600
CONTROL_THREADS = 8  # threads beyond the load tasks' for pings, serve and end_trial: never starved by load


class BrokerLink:
    """This agent's Redis connection: replies that survive a broker restart, cancel flags, heartbeats."""

    def __init__(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
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
                value = bool(self.redis.exists(CANCEL_KEY.format(run_id=run_id)))
            except redis.RedisError:
                value = False  # the deadline still stops the load if the broker is gone
            self._cancel_cache[run_id] = (time.monotonic(), value)
        return value

    def heartbeat_forever(
        self, name: str, ident: AgentIdentity, stop: threading.Event, sink: InfluxSink | None = None
    ) -> None:
        key = AGENT_KEY.format(name=name)
        while not stop.is_set():
            beat: AgentIdentity = {**ident, "heartbeat": time.time(), "sink": sink.stats() if sink else None}
            try:
                self.redis.set(key, json.dumps(beat), ex=HEARTBEAT_TTL_S)
            except redis.RedisError as exc:
                log.warning("heartbeat failed (broker unreachable?): %s", exc)
            stop.wait(HEARTBEAT_S)
        with contextlib.suppress(redis.RedisError):
            self.redis.delete(key)


def run_agent(
    *,
    broker: str,
    names: list[str],
    zone: str | None,
    allow: list[str],
    address: str | None = None,
    vm_uuid: str | None = None,
    locustfiles: Path | None = None,
    influx: InfluxConfig | None = None,
    concurrency: int = DEFAULT_TASK_SLOTS,
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
    kept = Kept(kept_dir(names[0]))
    hosts = {
        name: AgentHost(
            name=name,
            allowlist=allowlist,
            is_cancelled=link.is_cancelled,
            locustfile_dir=locustfiles,
            sink=sink,
            slots=slots,
            kept=kept,
        )
        for name in names
    }
    app = make_app(broker)
    for task_name in TASK_NAMES:
        _register_task(app, task_name, hosts, link)
    stop = threading.Event()
    allowed = [str(n) for n in allowlist.networks]
    beats = [
        threading.Thread(
            target=link.heartbeat_forever,
            args=(
                name,
                identity(name=name, zone=zone, allow=allowed, address=address, vm_uuid=vm_uuid, max_tasks=concurrency),
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
    worker = app.Worker(
        queues=[queue_for(name) for name in names],
        pool="threads",
        concurrency=concurrency + CONTROL_THREADS,
        hostname=f"{names[0]}@{socket.gethostname()}",
        loglevel="INFO",
        without_gossip=True,
        without_mingle=True,
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


def _register_task(app: Any, task_name: str, hosts: dict[str, AgentHost], link: BrokerLink) -> None:
    def run(*, id: int, agent: str, reply_to: str, kwargs: TaskRequest, clock_offset: float = 0.0) -> None:
        """The Celery task: its arguments are a wire.CeleryRequest."""
        host = hosts.get(agent)
        if host is None:
            log.error("request %s for agent %r, which this worker is not; ignored", id, agent)
            return
        request: Request = {"id": id, "task": task_name, "kwargs": kwargs, "clock_offset": clock_offset}
        execute(request, host, lambda message: link.send(reply_to, message))

    app.task(name=task_name)(run)
