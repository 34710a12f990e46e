"""The run's events, after Locust's: the run loop fires them; outputs (the live display, InfluxDB, and any
later report or soak check) listen. A listener that fails is logged with its name and the run goes on: no
output may cost a measurement or hide the error that stopped a run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("vtax.events")


class EventHook:
    """Listeners are called in the order they were added, with keyword arguments only."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: list[Callable[..., None]] = []

    def add_listener(self, listener: Callable[..., None]) -> Callable[..., None]:
        self._listeners.append(listener)
        return listener

    def fire(self, **kwargs: Any) -> None:
        for listener in self._listeners:
            try:
                listener(**kwargs)
            except Exception:
                name = getattr(listener, "__qualname__", repr(listener))
                log.exception("listener %s of event %s failed; the run goes on", name, self.name)


class Events:
    """The hooks of one run.

    - run_start(run_id, trials): the plan is made
    - trial_start(trial, total, start_at, duration, tags): load is about to start
    - host_sample(trial, sample): one sample of host counters, as it arrives (vCenter's after their trial)
    - agent_progress(agent, workload, values): a live, provisional reading from a running workload
    - trial_end(trial, total, record, kpis): a trial is stored (record: its TrialRecord)
    - trial_kpis(trial, kpis): a trial's KPIs recomputed once host counters arrived after it (vCenter)
    - hook_ran(trial, hook): a shell hook ran (its HookRun: command, exit code, output)
    - agents_lost(agents, timeout): before a trial, these agents are lost; waiting up to `timeout` s for them
    - agents_back(agents, missing, seconds): the wait is over: who came back, who did not, after how long
    - segment_recovered(trial, status, samples): a resumed soak stored a segment from what its agents kept
    - run_end(run_id, status)
    """

    def __init__(self) -> None:
        self.run_start = EventHook("run_start")
        self.trial_start = EventHook("trial_start")
        self.host_sample = EventHook("host_sample")
        self.agent_progress = EventHook("agent_progress")
        self.trial_end = EventHook("trial_end")
        self.trial_kpis = EventHook("trial_kpis")
        self.hook_ran = EventHook("hook_ran")
        self.agents_lost = EventHook("agents_lost")
        self.agents_back = EventHook("agents_back")
        self.segment_recovered = EventHook("segment_recovered")
        self.run_end = EventHook("run_end")
