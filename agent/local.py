"""An embedded-engine agent: a child process of the controller that executes tasks from a queue.

Messages are JSON strings, as on the distributed engine's wire. Each task runs in its own thread so that
one agent can serve and generate load at once; the workloads themselves run in child processes.
Besides its one reply, a running workload sends progress messages with live readings.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path

from agent.edge import AgentHost, execute
from agent.kept import Kept
from agent.safety import Allowlist
from agent.settings import kept_dir
from agent.sink import InfluxConfig, InfluxSink
from agent.wire import Message


def agent_main(
    name: str,
    allow: list[str],
    locustfiles: str | None,
    influx: InfluxConfig | None,
    inbox: Queue[str | None],
    outbox: Queue[str],
    parent: int,
) -> None:
    """Serve tasks until a None arrives. Runs as its own process group, so the whole agent can be killed.
    `parent` is the controller's pid as it spawned this agent: a controller killed while the agent was still
    importing has already gone when this runs, and the agent must see that rather than watch its new parent."""
    os.setpgid(0, 0)
    threading.Thread(target=_die_with_parent, args=(parent,), name="parent-watch", daemon=True).start()
    sink = InfluxSink(influx.model_copy(update={"spool_dir": influx.spool_dir / name})) if influx else None
    host = AgentHost(
        name=name,
        allowlist=Allowlist(allow),
        locustfile_dir=Path(locustfiles) if locustfiles else None,
        sink=sink,
        kept=Kept(kept_dir(name)),
    )

    def send(message: Message) -> None:
        outbox.put(json.dumps(message))

    while (message := inbox.get()) is not None:
        threading.Thread(target=execute, args=(json.loads(message), host, send), daemon=True).start()
    if sink is not None:
        sink.close(timeout=1.0)  # what InfluxDB does not take at once waits in the spool, not in memory


def _die_with_parent(parent: int) -> None:
    """When the controller dies, even by SIGKILL, this agent and the load it started die with it: the agent is
    handed to another parent, which this sees within 0.5 s, and it kills its own process group. (A watch, not
    PR_SET_PDEATHSIG: that fires when the thread that started the agent ends, not the process.)"""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.killpg(0, signal.SIGKILL)
