"""Host counters for each trial window, from wherever the host's own view is: the sources.

- LocalHostSource: the controller's own Linux machine. In the embedded engine, and in the lab, this host is
  the hypervisor: every agent and appliance shares its CPUs.
- AgentHostSource: every agent marked `hypervisor: true`, each sampling the Linux/KVM host it runs on
  through the `vtax.host_counters` task.
- controller.vsphere.VsphereHostSource: vCenter, which publishes a trial's counters only after it; they are
  read and stored in the background while the next trials run.
Every sample names its host; samples of several hosts are combined per second by mean in the analysis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from typing import TYPE_CHECKING, Any, Protocol

from agent.hostcounters import HostSample, sample_window
from workloads.base import MetricInfo

if TYPE_CHECKING:  # the spec imports HOST_METRICS from here
    from controller.clock import ClockReading
    from controller.engine import Engine
    from controller.plan import Trial
    from controller.spec import Experiment

HOST_METRICS: dict[str, MetricInfo] = {
    "host.cpu_pct": MetricInfo(unit="%", across_agents="mean", better="lower", description="busy CPU, all cores"),
    "host.softirq_pct": MetricInfo(
        unit="%", across_agents="mean", better="lower", description="softirq CPU (packet processing), all cores"
    ),
    "host.ctx_switches_per_s": MetricInfo(
        unit="1/s", across_agents="mean", better="lower", description="context switches"
    ),
    "host.cpu_max_core_pct": MetricInfo(
        unit="%",
        across_agents="mean",
        better="lower",
        description="the host's busiest logical CPU (a saturated packet-processing core hides in the average)",
    ),
    "host.cpu_per_gbps": MetricInfo(
        unit="% per Gbit/s", across_agents="mean", better="lower", description="host CPU % per Gbit/s of goodput"
    ),
    "appliance.host_cpu_pct": MetricInfo(
        unit="% of all cores",
        across_agents="mean",
        better="lower",
        description="CPU of the processes matching a hypervisor agent's appliance_processes, on host.cpu_pct's scale",
    ),
    # from vCenter (controller.vsphere): the hosts running agents, their agent VMs and appliance VMs
    "host.cpu_mhz": MetricInfo(unit="MHz", across_agents="mean", better="lower", description="ESXi host CPU used"),
    "host.mem_pct": MetricInfo(unit="%", across_agents="mean", better="lower", description="ESXi host memory used"),
    "host.net_rx_mbps": MetricInfo(unit="Mbit/s", across_agents="sum", better="higher", description="host receive"),
    "host.net_tx_mbps": MetricInfo(unit="Mbit/s", across_agents="sum", better="higher", description="host send"),
    "host.net_packets_per_s": MetricInfo(
        unit="1/s", across_agents="sum", better="higher", description="host packets received + sent"
    ),
    "host.net_dropped_per_s": MetricInfo(
        unit="1/s", across_agents="sum", better="lower", description="host packets dropped (receive + send)"
    ),
    "vm.cpu_pct": MetricInfo(unit="%", across_agents="mean", better="lower", description="agent VMs' CPU usage"),
    "vm.ready_pct": MetricInfo(
        unit="% per vCPU", across_agents="mean", better="lower", description="agent VMs' CPU ready time per vCPU"
    ),
    "vm.costop_pct": MetricInfo(
        unit="% per vCPU", across_agents="mean", better="lower", description="agent VMs' co-stop time per vCPU"
    ),
    "vm.cpu_latency_pct": MetricInfo(
        unit="%", across_agents="mean", better="lower", description="agent VMs' CPU latency (time not run)"
    ),
    "appliance.cpu_pct": MetricInfo(
        unit="%", across_agents="mean", better="lower", description="appliance VMs' CPU usage"
    ),
    "appliance.cpu_mhz": MetricInfo(
        unit="MHz", across_agents="sum", better="lower", description="appliance VMs' CPU used, all hosts"
    ),
    "appliance.ready_pct": MetricInfo(
        unit="% per vCPU", across_agents="mean", better="lower", description="appliance VMs' CPU ready per vCPU"
    ),
    "appliance.net_dropped_per_s": MetricInfo(
        unit="1/s", across_agents="sum", better="lower", description="packets the appliance VMs dropped"
    ),
}


CUT_SHORT_S = 1.0  # a trial that ends this long before its window does was cut short
ANSWER_WAIT_S = 5.0  # how long after its window a hypervisor agent's answer is waited for


class HostCounterSource(Protocol):
    """Host-side counters for one trial window."""

    def begin(
        self,
        *,
        trial: Trial,
        tags: dict[str, Any],
        start_at: float,
        seconds: float,
        on_sample: Callable[[HostSample], None],
    ) -> None: ...

    def end(self) -> list[HostSample]: ...  # every sample carries "host"; times in the controller's clock

    def finish(self, *, abandon: bool = False) -> None:
        """At run end: wait for what end() left running (or, with `abandon`, give up on it). Most sources
        leave nothing."""


class LocalHostSource(HostCounterSource):
    """The controller's own machine, sampled in a background thread."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._samples: list[HostSample] = []
        self._thread: threading.Thread | None = None

    def begin(
        self,
        *,
        trial: Trial,
        tags: dict[str, Any],
        start_at: float,
        seconds: float,
        on_sample: Callable[[HostSample], None],
    ) -> None:
        stop, samples = threading.Event(), []
        self._stop, self._samples = stop, samples

        def collect() -> None:
            for sample in sample_window(start_at=start_at, seconds=seconds, stop=stop.is_set):
                samples.append(sample)
                on_sample(sample)

        self._thread = threading.Thread(target=collect, name="host-counters", daemon=True)
        self._thread.start()

    def end(self) -> list[HostSample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self._samples


class AgentHostSource(HostCounterSource):
    """Every agent marked `hypervisor: true` samples the host it runs on, through `vtax.host_counters`.

    The agents write their samples to their own InfluxDB sinks and stream each to the controller as it is
    taken (for the live display); their final answers are the record. A trial cut short, or an agent that
    does not answer, keeps what streamed in.
    """

    def __init__(self, *, engine: Engine, experiment: Experiment, clocks: Mapping[str, ClockReading]) -> None:
        """`clocks` are the run's clock readings, filled at run start before the first trial begins."""
        self._engine, self._clocks, self._timing = engine, clocks, experiment.timing
        self._appliances = {a.name: a.appliance_processes for a in experiment.agents if a.hypervisor}
        self._calls: dict[str, Future[Any]] = {}
        self._streamed: dict[str, list[HostSample]] = {}
        self._live = threading.Event()
        self._end_at = 0.0
        self._tags: dict[str, Any] = {}

    def begin(
        self,
        *,
        trial: Trial,
        tags: dict[str, Any],
        start_at: float,
        seconds: float,
        on_sample: Callable[[HostSample], None],
    ) -> None:
        self._end_at, self._tags = start_at + seconds, tags
        self._live = threading.Event()
        self._live.set()
        self._streamed = {name: [] for name in self._appliances}
        deadline = self._end_at + self._timing.grace
        for name, pattern in self._appliances.items():
            offset = self._clocks[name].offset_s
            self._calls[name] = self._engine.call(
                name,
                "vtax.host_counters",
                {
                    "start_at": start_at + offset,
                    "seconds": seconds,
                    "deadline": deadline + offset,
                    "appliance_processes": pattern,
                    "run_id": tags["run"],
                    "tags": tags,
                    "warmup": self._timing.warmup,
                    "steady": self._timing.steady,
                    "clock_offset": offset,
                },
                on_sample=self._receiver(name, self._streamed[name], self._live, on_sample),
            )

    def _receiver(
        self, agent: str, streamed: list[HostSample], live: threading.Event, on_sample: Callable[[HostSample], None]
    ) -> Callable[[HostSample], None]:
        """What one agent's streamed samples go to while its trial lasts."""

        def receive(sample: HostSample) -> None:
            if live.is_set():
                sample = self._in_controller_clock(agent, sample)
                streamed.append(sample)
                on_sample(sample)

        return receive

    def end(self) -> list[HostSample]:
        if time.time() > self._end_at - CUT_SHORT_S:
            wait(self._calls.values(), timeout=max(0.0, self._end_at + ANSWER_WAIT_S - time.time()))
        else:  # cut short: the agents stop sampling, rather than write on into the next trial's time
            for name in self._calls:
                self._engine.call(name, "vtax.end_trial", {"run_id": self._tags["run"], "trial": self._tags["trial"]})
        self._live.clear()
        samples: list[HostSample] = []
        for name, future in self._calls.items():
            if future.done() and future.exception() is None:
                samples += [self._in_controller_clock(name, s) for s in future.result()["samples"]]
            else:
                samples += self._streamed[name]
        self._calls = {}
        return samples

    def _in_controller_clock(self, agent: str, sample: HostSample) -> HostSample:
        """The sample in the controller's clock, marked with the agent that measured it."""
        return {**sample, "t": sample["t"] - self._clocks[agent].offset_s, "agent": agent}


def default_sources(
    *,
    experiment: Experiment,
    engine: Engine,
    clocks: Mapping[str, ClockReading],
    hypervisor: HostCounterSource | None = None,
) -> list[HostCounterSource]:
    """The experiment's hypervisor agents and the hypervisor's own source (vCenter) where there are any, else
    the controller's own machine."""
    sources: list[HostCounterSource] = []
    if any(a.hypervisor for a in experiment.agents):
        sources.append(AgentHostSource(engine=engine, experiment=experiment, clocks=clocks))
    if hypervisor is not None:
        sources.append(hypervisor)
    return sources or [LocalHostSource()]
