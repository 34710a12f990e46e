"""The distributed engine's wire: one Celery app configuration and the Redis keys both sides use.

Celery carries requests to each agent's own queue; JSON is the only content type accepted, so a pickled
message is refused before anything in it is touched. Replies and progress travel back on a Redis list
the controller names in each request (`reply_to`); agents register and heartbeat under `vtax:agent:*`.
"""

from __future__ import annotations

from celery import Celery

AGENT_KEY = "vtax:agent:{name}"
AGENT_PATTERN = "vtax:agent:*"
CANCEL_KEY = "vtax:cancel:{run_id}"
HEARTBEAT_S = 2.0
HEARTBEAT_TTL_S = 15
VISIBILITY_S = 8 * 86400  # longer than the longest trial (a steady phase of up to 7 days) with its grace


def queue_for(agent: str) -> str:
    return f"vtax.agent.{agent}"


def make_app(broker: str) -> Celery:
    app = Celery("vtax", broker=broker)
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
        broker_transport_options={"socket_timeout": 5, "socket_connect_timeout": 5, "visibility_timeout": VISIBILITY_S},
        task_publish_retry_policy={"max_retries": 20, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2},
        worker_hijack_root_logger=False,
        task_default_queue="vtax.default",
    )
    return app
