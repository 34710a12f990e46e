"""Host counters for each trial window, from wherever the host's own view is: the sources.

- LocalHostSource: the controller's own Linux machine. In the embedded engine, and in the lab, this host is
  the hypervisor: every agent and appliance shares its CPUs.
- AgentHostSource: every agent marked `hypervisor: true`, each sampling the Linux/KVM host it runs on
  through the `vtax.host_counters` task.
- Wings add their own (the vSphere wing's reads vCenter, which publishes a trial's counters only after it).

Every source hands a trial's samples over the same two callbacks the run loop gives it: `on_sample` as each
arrives (the live view), `on_record` with the samples that are the record (stored, and in the trial's KPIs),
at the trial's end or, for vCenter, later. Every sample names its host and is in the controller's clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Protocol

from agent import wire
from agent.hostsampler import sample_window
from agent.wire import HostCountersReply, HostCountersRequest, HostSample, TrialTags
from controller.engine import Engine
from controller.spec import Experiment

CUT_SHORT_S = 1.0  # a trial that ends this long before its window does was cut short
ANSWER_WAIT_S = 5.0  # how long after its window a hypervisor agent's answer is waited for

SampleHandler = Callable[[HostSample], None]
RecordHandler = Callable[[list[HostSample]], None]


@dataclass(frozen=True, kw_only=True)
class TrialWindow:
    """The window a source measures: a trial's tags, its common start, and how long its load lasts."""

    tags: TrialTags
    start_at: float
    seconds: float

    @property
    def end(self) -> float:
        return self.start_at + self.seconds


WindowEnd = Callable[[], None]
"""Called when a window's load is over: hands its record to `on_record`, now or (vCenter) later."""


class HostCounterSource(Protocol):
    """Host-side counters for trial windows; a soak's next segment begins before the last has ended, so each
    window keeps its own state and is ended by what `begin` returned."""

    def begin(self, window: TrialWindow, *, on_sample: SampleHandler, on_record: RecordHandler) -> WindowEnd:
        """The trial's load is about to start; returns what ends this window."""

    def finish(self, *, abandon: bool = False) -> None:
        """At run end: wait for the records the windows' ends left to come (or, with `abandon`, give up on
        them). Most sources leave nothing."""


class LocalHostSource(HostCounterSource):
    """The controller's own machine, sampled in a background thread."""

    def begin(self, window: TrialWindow, *, on_sample: SampleHandler, on_record: RecordHandler) -> WindowEnd:
        stop, samples = threading.Event(), []

        def collect() -> None:
            for sample in sample_window(start_at=window.start_at, seconds=window.seconds, stop=stop.is_set):
                samples.append(sample)
                on_sample(sample)

        thread = threading.Thread(target=collect, name="host-counters", daemon=True)
        thread.start()

        def end() -> None:
            stop.set()
            thread.join()
            on_record(samples)

        return end


def host_counters_request(
    experiment: Experiment, window: TrialWindow, appliance_processes: str | None
) -> HostCountersRequest:
    """What a hypervisor agent is asked to sample for one trial."""
    timing = experiment.timing
    return {
        "start_at": window.start_at,
        "seconds": window.seconds,
        "deadline": window.end + timing.grace,
        "appliance_processes": appliance_processes,
        "tags": window.tags,
        "warmup": timing.warmup,
        "steady": timing.steady,
    }


class AgentHostSource(HostCounterSource):
    """Every agent marked `hypervisor: true` samples the host it runs on, through `vtax.host_counters`.

    The agents write their samples to their own InfluxDB sinks and stream each to the controller as it is
    taken (for the live display); their final answers are the record. A trial cut short, or an agent that
    does not answer, keeps what streamed in.
    """

    def __init__(self, *, engine: Engine, experiment: Experiment) -> None:
        self._engine, self._experiment = engine, experiment
        self._appliances = {a.name: a.appliance_processes for a in experiment.agents if a.hypervisor}

    def begin(self, window: TrialWindow, *, on_sample: SampleHandler, on_record: RecordHandler) -> WindowEnd:
        live = threading.Event()
        live.set()
        streamed: dict[str, list[HostSample]] = {name: [] for name in self._appliances}
        calls = {
            name: self._engine.call(
                name,
                wire.HOST_COUNTERS,
                host_counters_request(self._experiment, window, pattern),
                on_sample=self._receiver(name, streamed[name], live, on_sample),
            )
            for name, pattern in self._appliances.items()
        }
        return lambda: self._end(window, calls, streamed, live, on_record)

    @staticmethod
    def _receiver(
        agent: str, streamed: list[HostSample], live: threading.Event, on_sample: SampleHandler
    ) -> SampleHandler:
        """What one agent's streamed samples go to while its trial lasts."""

        def receive(sample: HostSample) -> None:
            if live.is_set():
                marked: HostSample = {**sample, "agent": agent}
                streamed.append(marked)
                on_sample(marked)

        return receive

    def _end(
        self,
        window: TrialWindow,
        calls: dict[str, Future[HostCountersReply]],
        streamed: dict[str, list[HostSample]],
        live: threading.Event,
        on_record: RecordHandler,
    ) -> None:
        if time.time() > window.end - CUT_SHORT_S:
            wait(calls.values(), timeout=max(0.0, window.end + ANSWER_WAIT_S - time.time()))
        else:  # cut short: the agents stop sampling, rather than write on into the next trial's time
            ended: wire.EndTrialRequest = {"run": window.tags["run"], "trial": window.tags["trial"]}
            for name in calls:
                self._engine.call(name, wire.END_TRIAL, ended)
        live.clear()
        samples: list[HostSample] = []
        for name, future in calls.items():
            if future.done() and future.exception() is None:
                samples += [{**s, "agent": name} for s in future.result()["samples"]]
            else:
                samples += streamed[name]
        on_record(samples)


def default_sources(
    *, experiment: Experiment, engine: Engine, hypervisors: list[HostCounterSource] | None = None
) -> list[HostCounterSource]:
    """The experiment's hypervisor agents and the hypervisors' own sources a wing gives (vCenter) where there
    are any, else the controller's own machine."""
    sources: list[HostCounterSource] = []
    if any(a.hypervisor for a in experiment.agents):
        sources.append(AgentHostSource(engine=engine, experiment=experiment))
    sources += hypervisors or []
    return sources or [LocalHostSource()]
