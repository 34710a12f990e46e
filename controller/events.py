"""A small event system, after locust's: the run loop fires, displays and sinks listen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class EventHook:
    """Listeners are called in the order they were added, with keyword arguments only."""

    def __init__(self) -> None:
        self._listeners: list[Callable[..., None]] = []

    def add_listener(self, listener: Callable[..., None]) -> Callable[..., None]:
        self._listeners.append(listener)
        return listener

    def fire(self, **kwargs: Any) -> None:
        for listener in self._listeners:
            listener(**kwargs)


class Events:
    """The hooks of one run.

    - run_start(run_id, trials): the plan is made
    - trial_start(trial, total, start_at, duration): load is about to start
    - host_sample(trial, sample): one second of host counters
    - agent_progress(agent, workload, values): a live, provisional reading from a running workload
    - trial_end(trial, total, status, reason, kpis): a trial is stored
    - run_end(run_id, status)
    """

    def __init__(self) -> None:
        self.run_start = EventHook()
        self.trial_start = EventHook()
        self.host_sample = EventHook()
        self.agent_progress = EventHook()
        self.trial_end = EventHook()
        self.run_end = EventHook()
