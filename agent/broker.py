"""The distributed engine's wire: one Celery app configuration, the Redis clients and the keys both sides use.

Celery carries requests to each agent's own queue. With a certificate directory (`vtax certs init`) every task
is signed by the controller (Celery's `auth` serializer, sha256) and an agent accepts only tasks signed by a
controller certificate it trusts; without one, tasks are plain JSON and anyone who can write to the broker can
make the agents send load. Either way JSON is the only content inside, so a pickled message is refused
before anything in it is touched. Replies and progress travel back on a Redis list the controller names in
each request (`reply_to`); agents register and heartbeat under `vtax:agent:*`. Every key and queue carries the
installation's prefix, so several vtax installations can share one Redis.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

import redis
from celery import Celery

from agent.settings import BrokerConfig
from agent.trust import Side, SideFiles, side_files

HEARTBEAT_S = 2.0
HEARTBEAT_TTL_S = 15
VISIBILITY_S = 8 * 86400  # longer than the longest trial (a steady phase of up to 7 days) with its grace


class Keys:
    """The Redis keys and queue names of one installation (its prefix)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.agent_pattern = f"{prefix}vtax:agent:*"
        self._reply = re.compile(re.escape(f"{prefix}vtax:replies:") + "[0-9a-f]{16}")

    def agent(self, name: str) -> str:
        return f"{self.prefix}vtax:agent:{name}"

    def cancel(self, run_id: str) -> str:
        return f"{self.prefix}vtax:cancel:{run_id}"

    def replies(self, token: str) -> str:
        return f"{self.prefix}vtax:replies:{token}"

    def is_reply_list(self, key: str) -> bool:
        """Whether `key` is a reply list a controller of this installation names: all an agent pushes to, so a
        request cannot make it write anywhere else."""
        return self._reply.fullmatch(key) is not None


def queue_for(agent: str) -> str:
    """An agent's queue; kombu puts the installation's prefix before it in Redis."""
    return f"vtax.agent.{agent}"


def _tls(files: SideFiles | None) -> dict[str, Any]:
    """TLS settings for both kombu and redis-py: the broker's certificate is always verified (against the CA of
    the certificate directory, or the system's), and this side's certificate is offered where Redis asks."""
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if files is not None:
        options.update(ssl_ca_certs=str(files.ca), ssl_certfile=str(files.cert), ssl_keyfile=str(files.key))
    return options


def _files(config: BrokerConfig, side: Side) -> SideFiles | None:
    return side_files(config.certs, side) if config.certs is not None else None


def redis_client(config: BrokerConfig, side: Side, *, connect_timeout: float = 5.0) -> redis.Redis:
    """A Redis client of this side, with the user, password and TLS of `config`."""
    secret = config.password.get_secret_value() if config.password else None
    return redis.Redis.from_url(
        config.url,
        username=config.username,
        password=secret,
        socket_timeout=5,
        socket_connect_timeout=connect_timeout,
        **(_tls(_files(config, side)) if config.tls else {}),
    )


def make_app(config: BrokerConfig, side: Side) -> Celery:
    """The Celery app of one side; ValueError when its certificate directory is wrong."""
    app = Celery("vtax", broker=config.url_with_credentials())
    transport: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5, "visibility_timeout": VISIBILITY_S}
    if config.prefix:
        transport["global_keyprefix"] = config.prefix
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # anything else, pickle above all, is refused and logged
        task_ignore_result=True,  # replies go to the controller's reply list
        task_acks_late=False,  # load is never run twice: a message is acked when it is taken
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a broker restart is waited out, never fatal
        # A message not acked within the visibility timeout is delivered again (celery #5935). Ours are acked as
        # they are taken, so only one a worker reserved but did not start waits unacked: for at most a trial's
        # lead. Set explicitly, rather than left to Redis' default of an hour, at more than any trial lasts.
        broker_transport_options=transport,
        task_publish_retry_policy={"max_retries": 20, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
        worker_hijack_root_logger=False,
        task_default_queue="vtax.default",
        # No remote control and no events: broadcast commands (shutdown, pool restart, rate limits) would be one
        # more way in for whoever can write to the broker, and agents need no pub/sub channel at all.
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    files = _files(config, side)  # read and checked once: TLS and signing use the same directory
    if config.tls:
        app.conf.broker_use_ssl = _tls(files)
    if files is not None:
        app.conf.update(
            task_serializer="auth",
            accept_content=["auth"],  # an agent verifies every task; unsigned or wrongly signed ones are refused
            result_accept_content=["json"],
            security_key=str(files.key),
            security_certificate=str(files.cert),
            security_cert_store=str(files.store / "*.crt") if files.store.is_dir() else str(files.store),
            security_digest="sha256",
        )
        app.setup_security(allowed_serializers=["json"], serializer="json", digest="sha256")
    return app
