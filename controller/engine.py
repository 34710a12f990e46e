"""The embedded engine: each agent is a local child process that executes the agent's task functions.

Requests and replies are JSON strings, exactly what the distributed engine puts on the wire, so both
engines exercise the same task functions and the same message shapes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from agent.local import agent_main
from controller.errors import InfrastructureError


class AgentLost(InfrastructureError):
    """An agent process died or was killed before it answered."""


class EmbeddedEngine:
    """Runs named local agents; `call` returns a Future of the task's JSON result."""

    def __init__(
        self, agent_names: list[str], *, on_progress: Callable[[str, str, dict[str, float]], None] | None = None
    ) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._outbox = self._context.Queue()
        self._agents: dict[str, tuple[Any, Any]] = {}  # name -> (process, inbox)
        self._pending: dict[int, tuple[str, Future[Any]]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._names = agent_names
        self._on_progress = on_progress
        self._receiver = threading.Thread(target=self._receive, name="engine-replies", daemon=True)

    def __enter__(self) -> EmbeddedEngine:
        for name in self._names:
            self._spawn(name)
        self._receiver.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, name: str) -> None:
        inbox = self._context.Queue()
        process = self._context.Process(
            target=agent_main, args=(name, inbox, self._outbox), name=f"vtax-agent-{name}", daemon=True
        )
        process.start()
        self._agents[name] = (process, inbox)

    def call(self, agent: str, task: str, kwargs: dict[str, Any]) -> Future[Any]:
        """Send a task; a running workload's live readings reach `on_progress(agent, workload, values)`."""
        process, inbox = self._agents[agent]
        if not process.is_alive():
            raise AgentLost(f"agent {agent!r} is not running (exit code {process.exitcode})")
        future: Future[Any] = Future()
        request_id = next(self._ids)
        with self._lock:
            self._pending[request_id] = (agent, future)
        inbox.put(json.dumps({"id": request_id, "task": task, "kwargs": kwargs}))
        return future

    def kill(self, agent: str, reason: str) -> None:
        """Kill an agent with everything it started, fail its pending calls, and start a fresh one."""
        self._terminate(agent)
        with self._lock:
            lost = [rid for rid, (name, _) in self._pending.items() if name == agent]
            futures = [self._pending.pop(rid)[1] for rid in lost]
        for future in futures:
            future.set_exception(AgentLost(f"agent {agent!r} killed: {reason}"))
        self._spawn(agent)

    def close(self) -> None:
        """Stop every agent; whatever load is still running (an interrupted trial) dies with its group."""
        for name, (process, inbox) in self._agents.items():
            if process.is_alive():
                inbox.put(None)
                process.join(2)
            self._terminate(name)
        self._outbox.put(None)

    def _terminate(self, agent: str) -> None:
        """SIGKILL the agent's process group: the agent and the load it started."""
        process, _ = self._agents[agent]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.join(5)

    def _receive(self) -> None:
        while (message := self._outbox.get()) is not None:
            reply = json.loads(message)
            if "progress" in reply:
                if self._on_progress is not None:
                    self._on_progress(reply["agent"], reply["workload"], reply["progress"])
                continue
            with self._lock:
                entry = self._pending.pop(reply["id"], None)
            if entry is None:
                continue  # a reply from an agent already given up on
            _, future = entry
            if reply["ok"]:
                future.set_result(reply["result"])
            else:
                future.set_exception(InfrastructureError(f"agent {reply['agent']!r}: {reply['error']}"))
