"""The experiment spec: YAML validated by pydantic models, with errors that name the file and the field.

One workload entry model per kind is built from the workload registry, so the controller validates
parameters with exactly the model the agent executes, and `vtax schema` describes every kind.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import stat
import types
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

import workloads
from controller.errors import SpecError
from controller.metrics import HOST_METRICS, NEEDS_APPLIANCE_PROCESSES, VSPHERE_ONLY
from workloads.base import HostName, MetricInfo, StrictModel, WorkloadParams

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


def _network(cidr: str) -> str:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ValueError(f"not a network: {exc}") from None
    return cidr


Network = Annotated[str, AfterValidator(_network)]  # an allowlist entry: 10.0.0.0/8, 192.0.2.7, ::1/128


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return value


Regex = Annotated[str, AfterValidator(_compiles)]


class Strict(StrictModel):
    """Spec models reject unknown keys (a typo must never be ignored silently), NaN, infinity, a boolean where a
    number goes and NUL bytes."""


class AgentSpec(Strict):
    """A place load runs. In the embedded engine, a local child process."""

    name: Name = Field(description="how workloads refer to it; a distributed agent registers under this name")
    address: HostName | None = Field(
        None,
        description="address its servers listen on and clients reach it by; default: 127.0.0.1 in the embedded "
        "engine, the first address the agent registered in the distributed engine",
    )
    zone: str | None = Field(None, description="security zone, e.g. web or db; default: what the agent registered")
    vm: str | None = Field(
        None,
        description="with --vcenter: the agent's VM, by name or BIOS UUID; default: the UUID the agent reports, "
        "then a VM named like the agent, then one with the agent's address",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="free labels, selectable as label:KEY=VALUE")
    allow: list[Network] = Field(
        ["127.0.0.0/8", "::1/128"],
        description="embedded engine: networks this agent may send load to (distributed agents take --allow)",
    )
    locustfiles: str | None = Field(
        None, description="embedded engine: directory of custom locustfiles (distributed agents take --locustfiles)"
    )
    hypervisor: bool = Field(
        False,
        description="this agent runs on a Linux/KVM hypervisor, not in a guest: it is that host's counter source. "
        "It runs load only where a workload names it; zone: and label: selectors skip it",
    )
    appliance_processes: Regex | None = Field(
        None,
        description="hypervisor agents: a regular expression searched for in each process's name and command line; "
        "the matching processes' CPU is appliance.host_cpu_pct (e.g. 'qemu.*guest=fw01' for a KVM appliance VM)",
    )


class Action(Strict):
    """A built-in hook action, carried out by the wing that registers a handler for its `kind`."""

    kind: ClassVar[str]
    kind_option: ClassVar[str]  # the command-line option that brings the wing in


class VsphereAction(Action):
    """A built-in vSphere action used as a hook (needs --vcenter): the condition's state set through the API."""

    kind: ClassVar[str] = "vsphere"
    kind_option: ClassVar[str] = "vcenter"

    vsphere: Literal["power_on", "power_off", "relocate", "set_attribute", "wait"] = Field(
        description="the action: power VMs on or off, move them to a host or cluster, set a custom attribute, or "
        "wait for a state"
    )
    vms: list[str] = Field(
        min_length=1,
        description="VM names or shell-style patterns; `agents` is every agent's VM, `appliances` every appliance VM",
    )
    host: str | None = Field(None, description="relocate: the destination host")
    cluster: str | None = Field(None, description="relocate: the destination cluster (its least busy host)")
    attribute: str | None = Field(None, description="set_attribute: the custom attribute's name (created if new)")
    value: str | None = Field(None, description="set_attribute: the value")
    state: Literal["poweredOn", "poweredOff", "toolsRunning"] | None = Field(None, description="wait: the state")
    timeout: float = Field(300.0, gt=0, description="seconds the action (and its tasks) may take")

    @field_validator("vms", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _arguments(self) -> VsphereAction:
        needed = {"relocate": (), "set_attribute": ("attribute", "value"), "wait": ("state",)}.get(self.vsphere, ())
        for field in needed:
            if getattr(self, field) is None:
                raise ValueError(f"{self.vsphere} needs {field}")
        if self.vsphere == "relocate" and (self.host is None) == (self.cluster is None):
            raise ValueError("relocate needs exactly one of host and cluster")
        return self

    def __str__(self) -> str:
        return f"vsphere {self.vsphere} {','.join(self.vms)}"


Hook = Annotated[
    Annotated[str, Tag("shell")] | Annotated[VsphereAction, Tag("vsphere")],
    Discriminator(lambda value: "shell" if isinstance(value, str) else "vsphere"),
]


class ConditionSpec(Strict):
    """A state of the system under test, entered and left around every trial by hooks."""

    name: Name = Field(description="how results name it")
    baseline: bool = Field(False, description="the condition every other is compared with; exactly one")
    description: str | None = Field(None, description="free text, e.g. the vendor and version of the appliance")
    setup: list[Hook] = Field(
        default_factory=list, description="run before each trial: shell commands, or vSphere actions"
    )
    teardown: list[Hook] = Field(default_factory=list, description="run after each trial, like setup")
    appliance: Literal["relay"] | None = Field(
        None, description="a built-in reference appliance in the path: 'relay' is vtax's userspace TCP relay"
    )

    @field_validator("setup", "teardown", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


Selector = Annotated[
    str,
    Field(
        pattern=r"^((zone|label):)?[A-Za-z0-9][A-Za-z0-9_.=-]*$",
        description="an agent name, `zone:NAME` (every agent of that zone) or `label:KEY=VALUE`",
    ),
]


class Pair(Strict):
    """One client → server flow of the `pairs` topology."""

    client: Name = Field(description="the agent that sends the load")
    server: Name = Field(description="the agent that serves it")


class WorkloadEntry(Strict):
    """Common fields of a workload in a spec; `kind` and `params` come from the workload module."""

    kind: str = Field(description="iperf3, http, cpu or noop: what load it is")  # one Literal per kind below
    params: WorkloadParams
    name: Name | None = Field(None, description="prefix of its metrics; defaults to the kind")
    topology: Literal["many-to-one", "pairs", "mesh", "zone-crossing"] = Field(
        "many-to-one",
        description="many-to-one: every `agents` entry loads `server`; pairs: explicit `pairs`; mesh: every "
        "agent of `agents` loads every other; zone-crossing: agents of `from_zone` load agents of `to_zone`",
    )
    agents: list[Selector] = Field(default_factory=list, description="clients (many-to-one), members (mesh)")
    server: Selector | None = Field(None, description="the server agent of many-to-one, for kinds that have one")
    pairs: list[Pair] = Field(default_factory=list, description="client → server flows of the pairs topology")
    from_zone: str | None = Field(None, description="zone-crossing: the clients' zone")
    to_zone: str | None = Field(None, description="zone-crossing: the servers' zone")

    @property
    def label(self) -> str:
        return self.name or self.kind


def _entry_model(kind: str) -> type[WorkloadEntry]:
    params_model = workloads.get(kind).Params
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{kind.capitalize()}Workload",
        __base__=WorkloadEntry,
        kind=(Literal[kind], ...),
        params=(params_model, Field(default_factory=params_model)),
    )


WORKLOAD_MODELS = {kind: _entry_model(kind) for kind in workloads.kinds()}
AnyWorkload = Annotated[Union[tuple(WORKLOAD_MODELS.values())], Field(discriminator="kind")]  # noqa: UP007


class Timing(Strict):
    """Phases of every trial, in seconds. KPIs come from the steady phase only."""

    warmup: float = Field(2.0, ge=0, le=3600, description="load runs but is not measured: connections ramp up")
    steady: float = Field(10.0, gt=0, le=7 * 86400, description="the measured phase: every KPI comes from it")
    cooldown: float = Field(1.0, ge=0, le=3600, description="load runs on, unmeasured, so the steady end is clean")
    grace: float = Field(10.0, ge=1, le=3600, description="hard deadline = end of cool-down + grace")
    lead: float = Field(
        1.0,
        ge=0.2,
        le=60,
        description="time from dispatch to the common start; at least what the workloads' tools need to be ready",
    )
    max_start_skew_ms: float = Field(
        20.0,
        gt=0,
        le=60_000,
        description="validity warning when an agent starts further than this from the common start",
    )

    @property
    def duration(self) -> float:
        return self.warmup + self.steady + self.cooldown


_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SPAN_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _span_seconds(value: Any) -> Any:
    """`90`, `"90s"`, `"30m"`, `"24h"` or `"2d"` as seconds; anything else is left for the float check."""
    if isinstance(value, str):
        match = _SPAN.match(value)
        if match is None:
            raise ValueError("expected seconds, or a number with s, m, h or d (for example 24h)")
        return float(match[1]) * _SPAN_UNITS[match[2]]
    return value


Span = Annotated[float, BeforeValidator(_span_seconds)]


class SlaRule(Strict):
    """Thresholds on one metric; a breach makes `vtax run` exit 1."""

    min: float | None = Field(None, description="every condition's mean must be at least this")
    max: float | None = Field(None, description="every condition's mean must be at most this")
    max_change_pct: float | None = Field(
        None, ge=0, description="no condition may differ from the baseline by more than this many %"
    )
    window: Span | None = Field(
        None,
        gt=0,
        description="a soak's min and max hold in every window of this long too (30m: each half hour of its "
        "segments), not only over the whole soak",
    )

    @model_validator(mode="after")
    def _possible(self) -> SlaRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}: no mean could meet both")
        if self.window is not None and self.min is None and self.max is None:
            raise ValueError("a window checks min or max in each window: give min, max or both")
        return self


class Criterion(Strict):
    """A bound one trial's KPI must keep for the trial to pass a search."""

    min: float | None = Field(None, description="the trial's value must be at least this")
    max: float | None = Field(None, description="the trial's value must be at most this")

    @model_validator(mode="after")
    def _bounded(self) -> Criterion:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}: no trial could pass")
        return self


class SearchSpec(Strict):
    """Capacity search: per condition, the highest offered load of one workload at which every trial passes
    every criterion, found by bisection and confirmed by repeated trials at the found load."""

    workload: Name = Field(
        description="the workload (its name) whose offered rate is searched: an iperf3 bitrate (Gbit/s) or an "
        "http request rate (req/s, its `rps`)"
    )
    low: float = Field(gt=0, le=10_000_000, description="lowest offered rate tried, over all its flows")
    high: float = Field(gt=0, le=10_000_000, description="highest offered rate tried, over all its flows")
    precision_pct: float = Field(1.0, ge=0.1, le=50, description="stop bisecting when high/low − 1 is below this")
    criteria: dict[str, Criterion] = Field(
        min_length=1, description="metric → bounds a trial must keep to pass, e.g. udp.loss_pct: {max: 0.5}"
    )
    goals: dict[Name, dict[str, Criterion]] = Field(
        default_factory=dict,
        description="further goals found in the same search, each its own criteria, e.g. ndr: {udp.loss_pct: "
        "{max: 0}} beside a 0.5 % partial-drop `criteria` (MLRsearch's several loss ratios): every trial informs "
        "every goal",
    )
    final_repetitions: int = Field(3, ge=2, le=100, description="trials at the found load: all must pass")
    achieved_ratio: float = Field(
        0.95,
        gt=0,
        le=1,
        description="a passing trial that carries less than this share of its offered load means the generator, "
        "not the device, is the limit: the search stops there as generator_limited",
    )
    max_trials: int = Field(40, ge=2, le=1000, description="per condition, the final repetitions included")

    def sender(self, experiment: Experiment) -> Literal["udp", "tcp", "http"]:
        """What the searched workload sends: UDP (whose shortfall is the generator's, not the path's), TCP or
        HTTP requests."""
        entry = next(e for e in experiment.workloads if e.label == self.workload)
        if entry.kind == "http":
            return "http"
        return "udp" if entry.params.protocol == "udp" else "tcp"

    @model_validator(mode="after")
    def _ordered(self) -> SearchSpec:
        if self.low >= self.high:
            raise ValueError(f"low {self.low:g} must be below high {self.high:g}")
        return self


class TilesSpec(Strict):
    """Density search: per condition, the most guest-VM tiles (copies of a set of workloads, one guest's traffic
    profile each) the agents carry while every tile keeps every criterion, as VMmark's tiles and KloudBuster's
    progression runs count them."""

    workloads: list[Name] = Field(
        min_length=1, description="the workloads that make one tile; they run only in the tiles search, once per tile"
    )
    max: int = Field(16, ge=1, le=1000, description="the most tiles tried")
    per_agent: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="the most tiles one agent carries (default: as many load tasks as its process runs at once); "
        "a condition that passes with every agent full is reported as ≥ N (agents exhausted)",
    )
    criteria: dict[str, Criterion] = Field(
        min_length=1,
        description="metric → bounds every tile must keep (a tile workload's metric, judged in the worst tile) or "
        "the host must keep (host.*), e.g. vm.throughput_gbps: {min: 0.9}",
    )
    final_repetitions: int = Field(3, ge=2, le=100, description="trials at the found number of tiles: all must pass")
    max_trials: int = Field(20, ge=2, le=1000, description="per condition, the final repetitions included")


class ProfileSpec(Strict):
    """One guest VM's demand, for the modelled consolidation: how many such VMs a host carries under each
    condition, from the host CPU each condition spends per Gbit/s."""

    gbps_per_vm: float = Field(gt=0, le=1000, description="the traffic one VM sends through the appliance, Gbit/s")
    cpu_pct_per_vm: float = Field(
        0.0, ge=0, le=100, description="the host CPU one VM uses for its own work, % of the whole host"
    )
    cpu_budget_pct: float = Field(
        100.0, gt=0, le=100, description="the share of the host's CPU the VMs may use together, %"
    )


class ZoneSource(Strict):
    """Where an agent VM's security zone comes from in vSphere."""

    source: Literal["attribute", "folder", "portgroup"] = Field(
        "attribute", alias="from", description="a custom attribute, the VM's folder, or its port group's name"
    )
    attribute: str = Field("vtax.zone", description="from: attribute — the custom attribute's name")
    pattern: Regex = Field(
        r"(?P<zone>.+)",
        description="from: portgroup or folder — regex on the name; its `zone` group (or the whole match) is the zone",
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ApplianceSelector(Strict):
    """Which VMs are the security appliances (one per host, typically); any rule that matches selects a VM."""

    name_pattern: Regex | None = Field(None, description="regex on the VM name, e.g. ^sva-")
    attribute: str | None = Field(None, description="custom attribute NAME=VALUE, e.g. vtax.role=appliance")
    vms: list[str] = Field(default_factory=list, description="explicit VM names")

    @field_validator("attribute")
    @classmethod
    def _pair(cls, value: str | None) -> str | None:
        if value is not None and "=" not in value:
            raise ValueError("expected NAME=VALUE")
        return value

    @property
    def names_any(self) -> bool:
        """Whether any rule is given: without one no VM is an appliance, and none is looked for."""
        return bool(self.name_pattern or self.attribute or self.vms)

    def picks(self, name: str, attributes: dict[str, str]) -> bool:
        """Whether a VM of this name and these custom attributes is an appliance."""
        key, _, value = (self.attribute or "").partition("=")
        return (
            name in self.vms
            or (self.name_pattern is not None and re.search(self.name_pattern, name) is not None)
            or (bool(key) and attributes.get(key) == value)
        )


class Allowance(Strict):
    """Zones that may share a host (all of them at once, or any subset), on the hosts matching `hosts`."""

    zones: list[str] = Field(min_length=2, description="zone names, e.g. [web, app]")
    hosts: str = Field("*", description="shell-style pattern on the host name, e.g. esx-dmz-*")
    why: str = Field("", description="the reason, shown with each finding it allows")


class ZoneWatch(Strict):
    """During a run, flag each trial in which a migration put VMs of two zones on one host (`zones_mixed`)."""

    allow: list[Allowance] = Field(default_factory=list, description="co-residencies that are accepted")


class VsphereSpec(Strict):
    """How agents map to vSphere (used with --vcenter): zones, appliances, what a migration means."""

    zones: ZoneSource | None = Field(None, description="read agents' zones from vSphere (the spec's zone wins)")
    appliances: ApplianceSelector = Field(default_factory=ApplianceSelector)
    on_migration: Literal["exclude", "keep"] = Field(
        "exclude",
        description="a trial during which an agent or appliance VM moved host: left out of the statistics, "
        "or kept (flagged either way)",
    )
    watch_zones: ZoneWatch | None = Field(
        None,
        description="flag trials during which any VM's migration joined two zones on a host (needs `zones`); "
        "the run's result also holds the zone audit of its start (docs/how-to/audit-zones.md)",
    )

    @model_validator(mode="after")
    def _watch_needs_zones(self) -> VsphereSpec:
        if self.watch_zones is not None and self.zones is None:
            raise ValueError("watch_zones needs `zones:` (where a VM's zone comes from)")
        return self


class SoakChecks(Strict):
    """What a soak must hold over its hours; each failed check fails the run (exit 1), like an SLA rule."""

    max_trend_pct_per_h: float | None = Field(
        None, gt=0, description="a metric whose significant trend exceeds this % of its first hour per hour fails"
    )
    max_step_pct: float | None = Field(
        None, gt=0, description="a metric with a change point that moves its level by more than this % fails"
    )
    max_memory_ratio: float = Field(
        1.3, gt=1, description="an agent whose memory (RSS) at the end exceeds this × its first hour's fails"
    )


class SoakEvent(Strict):
    """Hooks a soak runs as one of its segments starts, whatever condition holds: a change on purpose (a
    shaper stepped down, a neighbour started) that the drift analysis should find there."""

    segment: int = Field(ge=1, description="the segment (from 1) at whose start the hooks run")
    run: list[Hook] = Field(min_length=1, description="shell commands or vSphere actions, like a condition's setup")


class SoakSpec(Strict):
    """A long run cut into segments: the load runs on across them (each segment is a trial of its own, started
    as the last ends), and every metric is tested for trends and change points over the segments (how-to:
    soak)."""

    duration: Span = Field(gt=0, le=30 * 86400, description="the whole soak: seconds, or 90m, 24h, 2d")
    segment: Span = Field(
        60, ge=3, le=3600, description="the unit of storage, analysis and recovery: seconds, or 1m, 5m"
    )
    conditions: list[Name] | None = Field(None, description="the conditions held, in turn (default: the baseline only)")
    rotate: int = Field(10, ge=1, le=100_000, description="segments each condition holds before the next takes over")
    checks: SoakChecks = Field(default_factory=SoakChecks, description="what the soak must hold")
    at: list[SoakEvent] = Field(default_factory=list, description="hooks run as a given segment starts")

    @property
    def segments(self) -> int:
        return max(1, round(self.duration / self.segment))

    @model_validator(mode="after")
    def _two_segments(self) -> SoakSpec:
        if self.duration < 2 * self.segment:
            raise ValueError(f"duration {self.duration:g} s is shorter than two segments of {self.segment:g} s")
        return self


class DeployGroup(Strict):
    """Agent VMs of one zone, cloned for the run and spread evenly over the chosen hosts."""

    count: int = Field(ge=1, le=1000, description="agent VMs in this group")
    zone: Name = Field("lab", description="their security zone, in their names (vtax-<zone>-<host>-<n>) and agents")
    hosts: str | None = Field(None, description="shell-style pattern of the hosts to spread them over (default: all)")
    cluster: str | None = Field(None, description="only this cluster's hosts")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="labels of their agents, for label:KEY=VALUE selectors; every deployed agent also has "
        "`deployment`, `host` (the host it was placed on) and `group` (this group's index, from 0)",
    )


class DeploySpec(Strict):
    """Agent VMs this run clones from a template before its first trial and removes after its last, also when it
    fails or is stopped (`vtax run --keep` keeps them). Workloads reach them by zone: and label: selectors, or by
    their names, which follow the plan (how-to: across VMs)."""

    template: str = Field(description="the VM or template the agent VMs are cloned from (deploy/prepare-template.sh)")
    groups: list[DeployGroup] = Field(min_length=1, description="the agent VMs, by zone and hosts")
    name: Name | None = Field(
        None,
        description="the deployment's name, its VMs' vtax.deployment attribute; default: the experiment's name and "
        "six random hex digits, new for each run",
    )
    allow: list[Network] = Field(min_length=1, description="networks the deployed agents may send load to")
    broker: str | None = Field(None, description="the broker URL as the agent VMs reach it (default: --broker's)")
    influx: str | None = Field(None, description="InfluxDB URL the deployed agents stream to")
    network: str | None = Field(None, description="port group to connect their NICs to (default: the template's)")
    datastore: str | None = Field(None, description="datastore for their disks (default: the template's)")
    linked_clone: bool = Field(False, description="linked clones from the template's current snapshot")
    cloud_init: bool = Field(
        False, description="give the agents their settings as cloud-init user data, not guestinfo.vtax.* keys"
    )
    parallel: int = Field(8, ge=1, le=64, description="clones at once")
    wait: float = Field(600.0, gt=0, le=3600, description="seconds to wait for every agent to register")


class Experiment(Strict):
    """An experiment: who runs what load, under which conditions, how often, in which order."""

    name: Name = Field(description="names the run in results, the store and InfluxDB")
    description: str | None = Field(None, description="free text")
    agents: list[AgentSpec] = Field(
        default_factory=list, description="where load runs; names unique; at least one, or a `deploy` block"
    )
    deploy: DeploySpec | None = Field(
        None, description="agent VMs cloned for this run and removed after it (with --vcenter and --broker)"
    )
    conditions: list[ConditionSpec] = Field(
        min_length=1, description="the states compared; names unique, exactly one `baseline: true`"
    )
    workloads: list[AnyWorkload] = Field(  # type: ignore[valid-type]
        min_length=1, description="what load runs, from which agents to which; names (or kinds) unique"
    )
    timing: Timing = Field(default_factory=Timing, description="the phases of every trial")
    repetitions: int = Field(3, ge=1, le=1000, description="trials per condition")
    order: Literal["interleaved", "blocked", "random"] = Field(
        "interleaved", description="interleaved ABAB..., blocked AA..BB.., random within each repetition"
    )
    seed: int = Field(0, ge=0, lt=2**63, description="seed of the random order")
    hook_timeout: float = Field(120.0, gt=0, le=86400, description="seconds one hook command may take")
    hook_env: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]] = Field(
        default_factory=list,
        description="the controller's environment variables shell hooks see, besides PATH, HOME, the locale and "
        "the run's VTAX_* variables (hooks never see the others: the broker URL, tokens, passwords)",
    )
    on_agent_loss: Literal["continue", "abort"] = Field(
        "continue", description="when an agent dies mid-trial: store the trial as incomplete and go on, or abort"
    )
    agent_lost_after: float = Field(
        10.0,
        ge=5,
        le=600,
        description="seconds without a heartbeat (agents beat every 2 s) before the controller counts a "
        "distributed agent lost and fails what it waits for from it",
    )
    rejoin_timeout: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="before each trial, seconds to wait for a lost agent to come back (its heartbeat resumes, a "
        "local agent is restarted); a trial that still lacks it is incomplete",
    )
    sla: dict[str, SlaRule] = Field(default_factory=dict, description="thresholds keyed by metric name")
    search: SearchSpec | None = Field(
        None, description="find each condition's capacity instead of measuring at one load (how-to: capacity)"
    )
    tiles: TilesSpec | None = Field(
        None,
        description="find how many guest-VM tiles each condition carries (after the capacity search, if any; "
        "how-to: capacity)",
    )
    soak: SoakSpec | None = Field(
        None, description="a long run in segments, tested for drift and leaks instead of repeated (how-to: soak)"
    )
    profile: ProfileSpec | None = Field(
        None,
        description="one guest VM's demand: the modelled VMs per host of each condition, from its host CPU per "
        "Gbit/s (how-to: capacity)",
    )
    vsphere: VsphereSpec = Field(
        default_factory=VsphereSpec, description="with --vcenter: zones, appliance VMs, what a migration does"
    )

    @model_validator(mode="after")
    def _soak_timing(self) -> Experiment:
        """A soak's segments are its trials: all steady, each as long as a segment."""
        if self.soak is not None:
            self.timing = self.timing.model_copy(update={"warmup": 0.0, "steady": self.soak.segment, "cooldown": 0.0})
        return self

    @property
    def searches(self) -> bool:
        """The run searches (a capacity, tiles or both) instead of repeating trials at one load."""
        return self.search is not None or self.tiles is not None

    @property
    def lead(self) -> float:
        """Seconds from dispatch to the common start: the spec's lead, or longer where a workload's tools need
        longer to be ready (locust imports for about a second), so no load starts late."""
        return max(self.timing.lead, *(workloads.get(entry.kind).READY_S for entry in self.workloads))

    def tile_workloads(self) -> list[WorkloadEntry]:
        """The workloads that make a tile: they run in the tiles search only."""
        names = self.tiles.workloads if self.tiles is not None else []
        return [entry for entry in self.workloads if entry.label in names]

    @property
    def baseline(self) -> ConditionSpec:
        return next(c for c in self.conditions if c.baseline)

    def agent(self, name: str) -> AgentSpec:
        return next(a for a in self.agents if a.name == name)

    def vsphere_actions(self) -> list[tuple[ConditionSpec, str, VsphereAction]]:
        """Every hook that is a vSphere action: (condition, "setup" or "teardown", action)."""
        return [
            (condition, stage, hook)
            for condition in self.conditions
            for stage in ("setup", "teardown")
            for hook in getattr(condition, stage)
            if isinstance(hook, VsphereAction)
        ]

    @property
    def mentions_vsphere(self) -> bool:
        """The spec says something of vSphere (a vsphere section, an agent's VM, a vSphere hook): it is meant
        to be run with --vcenter."""
        return (
            "vsphere" in self.model_fields_set
            or self.deploy is not None
            or any(a.vm for a in self.agents)
            or bool(self.vsphere_actions())
        )


def metric_catalogue(experiment: Experiment) -> dict[str, MetricInfo]:
    """Every metric a run of this experiment can report, with its unit and direction: each workload's, under
    its label, then the host's."""
    catalogue: dict[str, MetricInfo] = {}
    for entry in experiment.workloads:
        for field, info in workloads.get(entry.kind).METRICS.items():
            catalogue[f"{entry.label}.{field}"] = info
    return catalogue | HOST_METRICS


def schema() -> dict[str, Any]:
    """JSON Schema of the spec, for editors."""
    return Experiment.model_json_schema()


MAX_SPEC_BYTES = 1 << 20  # a spec is a page of YAML; anything near this size is not one
MAX_NESTING = 40  # mappings and lists inside each other
MAX_VALUES = 100_000  # values after aliases are expanded: an alias bomb stops here, not at memory's end


def load(path: str | Path) -> Experiment:
    """Read and validate a spec file; any problem raises SpecError naming the file and the field. Only a
    regular file of at most MAX_SPEC_BYTES is read (never a FIFO or a device, which could block or never end)."""
    source = str(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SpecError(source, "", "file not found") from None
    except OSError as exc:
        raise SpecError(source, "", f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(source, "", "not a regular file; expected a YAML file")
        if info.st_size > MAX_SPEC_BYTES:
            raise SpecError(source, "", f"{info.st_size:,} bytes; a spec may have at most {MAX_SPEC_BYTES:,}")
        raw = os.read(descriptor, MAX_SPEC_BYTES + 1)
    finally:
        os.close(descriptor)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(source, "", f"not UTF-8 text (byte {exc.start})") from None
    return parse(text, source)


def parse(text: str, source: str = "<spec>") -> Experiment:
    """Validate spec text; `source` names it in errors."""
    data = _yaml(text, source)
    if data is None:
        raise SpecError(source, "", "the file is empty; expected an experiment (see `vtax schema`)")
    if not isinstance(data, dict):
        raise SpecError(source, "", f"expected a mapping of keys at the top level, got {type(data).__name__}")
    timing = data.get("timing")
    timed = sorted({"warmup", "steady", "cooldown"} & set(timing)) if isinstance(timing, dict) else []
    if "soak" in data and timed:  # checked here: a soak sets these itself, so the model cannot tell who did
        raise SpecError(source, f"timing.{timed[0]}", "a soak's trials are its segments: set `soak.segment` instead")
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(source, exc) from None
    _check_references(source, experiment, planned=experiment.deploy is None)
    return experiment


def with_agents(experiment: Experiment, agents: list[AgentSpec], source: str) -> Experiment:
    """The experiment with `agents` added (a deployment's, once planned), checked again: the names a workload
    gives are known only now."""
    grown = experiment.model_copy(update={"agents": [*experiment.agents, *agents]})
    _check_references(source, grown, planned=True)
    return grown


def _yaml(text: str, source: str) -> Any:
    """The YAML document in `text`, bounded in size, nesting and alias expansion, every error located."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(source, "", f"{len(text):,} characters; a spec may have at most {MAX_SPEC_BYTES:,}")
    try:
        loader = _SpecLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_size(node, source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise SpecError(f"{source}{where}", "", f"malformed YAML: {_short(exc.problem or exc.context)}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise SpecError(f"{source}:{line}:{column}", "", f"malformed YAML: {_short(exc.reason)}") from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:  # e.g. an integer of 5,000 digits
        raise SpecError(source, "", f"malformed YAML: {_short(str(exc))}") from None


def _short(text: object, limit: int = 120) -> str:
    """One line of at most `limit` characters: what the user wrote is quoted, never echoed whole."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _check_size(root: yaml.Node, source: str) -> None:
    """Refuse a document whose aliases expand to more than MAX_VALUES values (each node counted once per
    place it appears, computed without expanding anything)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done or not children:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_VALUES:
                mark = node.start_mark
                raise SpecError(
                    f"{source}:{mark.line + 1}:{mark.column + 1}",
                    "",
                    f"its aliases expand to more than {MAX_VALUES:,} values; is this an alias bomb?",
                )
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, made strict: a key given twice or one that cannot be a key (a list) is an error,
    not silently kept or a crash; nesting is bounded; and `1:30` is the text it looks like, not YAML 1.1's
    base-60 number 90."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if not tag.endswith((":int", ":float"))]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_NESTING} levels deep", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                repeated = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {type(key).__name__} cannot be a key", key_node.start_mark
                ) from None
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {_short(repr(key), 60)} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's core schema numbers: no base 60 (`1:30`), no `0o`-less octal, no `_` separators
_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


_INTERNAL_PART = re.compile(r"^[a-z][a-z-]*\[.*\]$")  # pydantic's names of validators and union members


def _field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the user's field path: the discriminator tag after `workloads[i]` and
    pydantic's own names (`function-after[...]`) are left out; the last part (an unknown key) always stays."""
    path = ""
    for number, part in enumerate(loc):
        last = number == len(loc) - 1
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        is_tag = number >= 2 and loc[number - 2] == "workloads" and isinstance(loc[number - 1], int)
        if not last and ((is_tag and part in WORKLOAD_MODELS) or _INTERNAL_PART.match(part)):
            continue
        plain = part.isprintable() and part == part.strip() and part != ""
        shown = _short(part if plain else repr(part), 60)
        path += f".{shown}" if path else shown
    return path


def _spec_error(source: str, exc: ValidationError) -> SpecError:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    kind = error["type"]
    if "field" in error.get("ctx", {}):  # a model-wide check (StrictModel) that names the field it refused
        loc = (*loc, error["ctx"]["field"])
    if kind == "missing":
        reason = "required field is missing"
    elif kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1])[:100], allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        reason = f"unknown key; {hint}expected one of: {', '.join(allowed)}"
    elif kind == "union_tag_invalid":
        tag = error["input"].get("kind") if isinstance(error["input"], dict) else error["input"]
        reason = f"unknown workload kind {_short(repr(tag), 40)}; expected one of: {', '.join(WORKLOAD_MODELS)}"
        loc = (*loc, "kind")
    elif kind == "union_tag_not_found":
        reason = f"required field is missing; expected one of: {', '.join(WORKLOAD_MODELS)}"
        loc = (*loc, "kind")
    else:
        reason = f"{error['msg']} (got {_short(repr(error['input']), 60)})" if "input" in error else error["msg"]
        reason = reason.removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    return SpecError(source, _field_path(loc), reason + (f" (and {more} more problem(s))" if more else ""))


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model found at `loc`, walking the spec models."""
    model: Any = Experiment
    keyed = False  # the last field was a map: the next part is one of its keys, not a field
    for part in loc:
        if keyed:
            keyed = False
        elif isinstance(part, str) and part in WORKLOAD_MODELS:
            model = WORKLOAD_MODELS[part]
        elif isinstance(part, str) and isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(part)
            model = _unwrap(field.annotation) if field is not None else None
            keyed = field is not None and _is_map(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _is_map(annotation: Any) -> bool:
    while get_origin(annotation) in (Union, types.UnionType, Annotated):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return get_origin(annotation) is dict


def _unwrap(annotation: Any) -> Any:
    """The model inside list[...], X | None, dict[str, X] or Annotated[...]."""
    while get_origin(annotation) in (list, dict, Union, types.UnionType, Annotated):
        args = [a for a in get_args(annotation) if a is not type(None)]
        annotation = args[-1] if get_origin(annotation) is dict else args[0]
    return annotation


def _check_references(source: str, experiment: Experiment, *, planned: bool) -> None:
    """Cross-field rules pydantic's per-field validation cannot see. Until a `deploy` block is `planned`, a
    workload may name agents that are not defined yet."""
    if not experiment.agents and experiment.deploy is None:
        raise SpecError(source, "agents", "required: at least one agent (or a `deploy` block that makes them)")
    for collection, items in (("agents", experiment.agents), ("conditions", experiment.conditions)):
        _unique(source, collection, [item.name for item in items])
    _unique(source, "workloads", [entry.label for entry in experiment.workloads], key="name")

    baselines = [i for i, c in enumerate(experiment.conditions) if c.baseline]
    if not baselines:
        raise SpecError(source, "conditions", "no condition is marked `baseline: true`; exactly one must be")
    if len(baselines) > 1:
        names = ", ".join(experiment.conditions[i].name for i in baselines)
        raise SpecError(
            source, f"conditions[{baselines[1]}].baseline", f"more than one baseline ({names}); exactly one must be"
        )

    for i, agent in enumerate(experiment.agents):
        if agent.appliance_processes is not None and not agent.hypervisor:
            raise SpecError(
                source,
                f"agents[{i}].appliance_processes",
                "only a hypervisor agent sees the host's processes; set `hypervisor: true` on this agent",
            )

    known = [a.name for a in experiment.agents]
    for i, entry in enumerate(experiment.workloads):
        _check_workload(source, f"workloads[{i}]", entry, known if planned else None)

    relayed = [c for c in experiment.conditions if c.appliance == "relay"]
    for i, entry in enumerate(experiment.workloads):
        if relayed and getattr(entry.params, "protocol", "tcp") != "tcp":
            raise SpecError(
                source,
                f"workloads[{i}].params.protocol",
                f"condition {relayed[0].name!r} uses the relay, which forwards TCP only",
            )

    names = metric_catalogue(experiment)
    if experiment.searches and "repetitions" in experiment.model_fields_set:
        raise SpecError(
            source, "repetitions", "a search spec sets `final_repetitions` instead: the trials at the found load"
        )
    if experiment.soak is not None:
        _check_soak(source, experiment, experiment.soak)
    if experiment.search is not None:
        _check_search(source, experiment, experiment.search, names)
    if experiment.tiles is not None:
        _check_tiles(source, experiment, experiment.tiles, names)
    if experiment.profile is not None:
        _check_metric(source, "profile", experiment, "host.cpu_per_gbps", names)
    for metric, rule in experiment.sla.items():
        _check_metric(source, f"sla.{metric}", experiment, metric, names)
        if rule.window is not None:
            _check_window(source, f"sla.{metric}.window", experiment.soak, rule.window)


def _check_window(source: str, field: str, soak: SoakSpec | None, window: float) -> None:
    """A window is a span of a soak's segments: a whole number of them, within the soak."""
    if soak is None:
        raise SpecError(source, field, "only a soak has windows: its segments, taken a window at a time")
    if window < soak.segment or window > soak.duration:
        raise SpecError(
            source,
            field,
            f"{window:g} s: a window spans segments ({soak.segment:g} s) to the whole soak ({soak.duration:g} s)",
        )


def _check_soak(source: str, experiment: Experiment, soak: SoakSpec) -> None:
    """A soak neither searches nor repeats, and holds known conditions."""
    for field in ("search", "tiles", "repetitions"):
        if field in experiment.model_fields_set:
            raise SpecError(source, field, "a soak holds its load for `soak.duration`; it does not search or repeat")
    for i, event in enumerate(soak.at):
        if event.segment > soak.segments:
            raise SpecError(
                source, f"soak.at[{i}].segment", f"segment {event.segment} is past the soak's {soak.segments} segments"
            )
    known = [c.name for c in experiment.conditions]
    for i, name in enumerate(soak.conditions or []):
        if name not in known:
            raise SpecError(source, f"soak.conditions[{i}]", f"no condition named {name!r}; known: {', '.join(known)}")


def _check_search(source: str, experiment: Experiment, search: SearchSpec, names: dict[str, MetricInfo]) -> None:
    """The searched workload exists and has a rate to vary; every criterion is a metric this run reports."""
    labels = {entry.label: entry for entry in experiment.workloads}
    entry = labels.get(search.workload)
    if entry is None:
        raise SpecError(source, "search.workload", f"no workload named {search.workload!r}; known: {', '.join(labels)}")
    if entry.kind not in ("iperf3", "http") or getattr(entry.params, "scenario", None) == "locustfile":
        raise SpecError(
            source,
            "search.workload",
            f"a search varies an iperf3 workload's bitrate or a built-in http scenario's rps; {search.workload!r} "
            f"is {entry.kind}" + (" with a locustfile" if entry.kind == "http" else ""),
        )
    if experiment.tiles is not None and search.workload in experiment.tiles.workloads:
        raise SpecError(
            source, "search.workload", f"{search.workload!r} is part of a tile: it runs in the tiles search only"
        )
    for metric in search.criteria:
        _check_metric(source, f"search.criteria.{metric}", experiment, metric, names)
    for goal, criteria in search.goals.items():
        if not criteria:
            raise SpecError(source, f"search.goals.{goal}", "give the goal at least one criterion")
        for metric in criteria:
            _check_metric(source, f"search.goals.{goal}.{metric}", experiment, metric, names)


def _check_tiles(source: str, experiment: Experiment, tiles: TilesSpec, names: dict[str, MetricInfo]) -> None:
    """A tile's workloads exist, once each; every criterion is a host metric or a tile workload's."""
    labels = [entry.label for entry in experiment.workloads]
    for i, name in enumerate(tiles.workloads):
        if name not in labels:
            raise SpecError(source, f"tiles.workloads[{i}]", f"no workload named {name!r}; known: {', '.join(labels)}")
        if name in tiles.workloads[:i]:
            raise SpecError(source, f"tiles.workloads[{i}]", f"{name!r} is named twice")
    for metric in tiles.criteria:
        where = f"tiles.criteria.{metric}"
        _check_metric(source, where, experiment, metric, names)
        label = metric.partition(".")[0]
        if label != "host" and label not in tiles.workloads:
            raise SpecError(
                source, where, f"a tile is judged by its own workloads ({', '.join(tiles.workloads)}) and host.*"
            )


def _check_metric(source: str, where: str, experiment: Experiment, metric: str, names: dict[str, MetricInfo]) -> None:
    """A metric a spec names (an SLA rule, a search criterion) is known, and this experiment reports it."""
    if metric not in names:
        close = difflib.get_close_matches(metric, sorted(names), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpecError(source, where, f"unknown metric; {hint}known: {', '.join(sorted(names))}")
    why = _never_reported(experiment, metric)
    if why:
        raise SpecError(source, where, f"this experiment never reports it: {why}")


def _never_reported(experiment: Experiment, metric: str) -> str | None:
    """Why a known metric can never have a value in a run of this experiment, if it cannot."""
    if metric in VSPHERE_ONLY and not experiment.mentions_vsphere:
        return "only vCenter reports it (give the spec a `vsphere:` section and run it with --vcenter)"
    if metric in NEEDS_APPLIANCE_PROCESSES and not any(a.appliance_processes for a in experiment.agents):
        return "only a hypervisor agent with `appliance_processes` measures it"
    if metric == "host.cpu_per_gbps" and not any(
        "throughput_gbps" in workloads.get(entry.kind).METRICS for entry in experiment.workloads
    ):
        return "it divides host CPU by the workloads' throughput_gbps, and no workload here reports one"
    label, _, field = metric.partition(".")
    for entry in experiment.workloads:
        hook = getattr(workloads.get(entry.kind), "unavailable_metrics", None)
        if entry.label == label and hook is not None and field in (missing := hook(entry.params)):
            return f"{entry.kind} with these params: {missing[field]}"
    return None


_TOPOLOGY_FIELDS = {
    "many-to-one": {"agents", "server"},
    "pairs": {"pairs"},
    "mesh": {"agents"},
    "zone-crossing": {"from_zone", "to_zone"},
}


def _check_workload(source: str, where: str, entry: WorkloadEntry, known: list[str] | None) -> None:
    """Topology fields present and consistent, named agents defined (unless `known` is None: not yet),
    servers where the kind needs them."""
    module = workloads.get(entry.kind)
    external = module.external_target(entry.params)
    for field in set().union(*_TOPOLOGY_FIELDS.values()) - _TOPOLOGY_FIELDS[entry.topology]:
        if getattr(entry, field):
            raise SpecError(source, f"{where}.{field}", f"not used by the {entry.topology} topology")
    if entry.topology != "many-to-one" and (not module.HAS_SERVER or external):
        raise SpecError(source, f"{where}.topology", f"{entry.topology} needs a kind with a server agent")
    if entry.topology == "many-to-one":
        if not entry.agents:
            raise SpecError(source, f"{where}.agents", "required: at least one agent")
        if entry.server is not None and (not module.HAS_SERVER or external):
            reason = (
                "give either a server agent or params.target"
                if external
                else f"a {entry.kind} workload has no server side"
            )
            raise SpecError(source, f"{where}.server", reason)
        if entry.server is None and module.HAS_SERVER and not external:
            raise SpecError(source, f"{where}.server", f"required: a {entry.kind} workload needs a server agent")
    elif entry.topology == "pairs" and not entry.pairs:
        raise SpecError(source, f"{where}.pairs", "required: at least one client/server pair")
    elif entry.topology == "mesh" and len(entry.agents) < 2:
        raise SpecError(source, f"{where}.agents", "a mesh needs at least two agents")
    elif entry.topology == "zone-crossing" and not (entry.from_zone and entry.to_zone):
        raise SpecError(
            source, f"{where}.{'to_zone' if entry.from_zone else 'from_zone'}", "required for zone-crossing"
        )
    named = [(f"{where}.agents[{j}]", a) for j, a in enumerate(entry.agents)]
    named += [(f"{where}.server", entry.server)] if entry.server else []
    for j, pair in enumerate(entry.pairs):
        named += [(f"{where}.pairs[{j}].client", pair.client), (f"{where}.pairs[{j}].server", pair.server)]
    for field, name in named:
        if ":" not in name and known is not None:
            _known_agent(source, field, name, known)


def _unique(source: str, collection: str, names: list[str], key: str = "name") -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise SpecError(source, f"{collection}[{i}].{key}", f"{name!r} is used twice; names must be unique")
        seen.add(name)


def _known_agent(source: str, field: str, name: str, known: list[str]) -> None:
    if name not in known:
        raise SpecError(source, field, f"unknown agent {name!r}; defined agents: {', '.join(known)}")
