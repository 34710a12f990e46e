"""An embedded-engine agent: a child process of the controller that executes tasks from a queue.

Messages are JSON strings, as on the distributed engine's wire. Each task runs in its own thread so that
one agent can serve and generate load at once; the workloads themselves run in child processes.
Besides its one reply, a running workload sends progress messages with live readings.
"""

from __future__ import annotations

import json
import os
import threading
from multiprocessing.queues import Queue
from typing import Any

from agent.tasks import TASKS, run_workload


def agent_main(name: str, inbox: Queue[str | None], outbox: Queue[str]) -> None:
    """Serve tasks until a None arrives. Runs as its own process group, so the whole agent can be killed."""
    os.setpgid(0, 0)
    while (message := inbox.get()) is not None:
        request = json.loads(message)
        threading.Thread(target=_handle, args=(name, request, outbox), daemon=True).start()


def _handle(name: str, request: dict[str, Any], outbox: Queue[str]) -> None:
    reply: dict[str, Any] = {"id": request["id"], "agent": name}
    task = TASKS.get(request["task"])
    kwargs = dict(request["kwargs"])
    if task is run_workload:
        workload = kwargs["workload"]
        kwargs["progress"] = lambda values: outbox.put(json.dumps({**reply, "workload": workload, "progress": values}))
    try:
        if task is None:
            raise LookupError(f"unknown task {request['task']!r}")
        reply["result"] = task(**kwargs)
        reply["ok"] = True
    except Exception as exc:  # reported to the controller, never fatal to the agent
        reply["ok"], reply["error"] = False, f"{type(exc).__name__}: {exc}"
    outbox.put(json.dumps(reply))
