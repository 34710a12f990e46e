"""Security zones on shared hosts: which hosts carry VMs of more than one zone, which of those pass no
appliance, where cluster rules would let zones meet, and which migrations made them meet.

The question behind it: a host that runs VMs of two zones joins them inside the hypervisor, where the physical
firewall between the zones sees nothing; only an appliance on that host (a virtual firewall, an IDS) or cluster
rules that keep the zones apart hold the line. This module decides on plain data (placements, rules, migration
events), so it is tested on hand-made inventories; `controller.vsphere.audit` reads them from vCenter.

A policy file says which co-residencies are allowed; everything else found is a violation.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

import yaml
from pydantic import Field, ValidationError

from agent.identity import swapped_uuid
from agent.wire import AgentIdentity
from controller.errors import InputError
from controller.spec import Allowance, ApplianceSelector, Strict, ZoneSource

FindingKind = Literal["co_resident", "no_appliance", "drs_may_mix", "migration_mixed"]


class ZonePolicy(Strict):
    """What `vtax audit zones --policy FILE` checks; the file is this model in YAML."""

    zones: ZoneSource = Field(default_factory=ZoneSource, description="where a VM's zone comes from")
    appliances: ApplianceSelector = Field(
        default_factory=ApplianceSelector, description="which VMs are the security appliances"
    )
    allow: list[Allowance] = Field(default_factory=list, description="co-residencies that are accepted")
    require_appliance: bool = Field(
        True, description="a host carrying VMs of two zones must run a powered-on appliance VM, allowed or not"
    )


@dataclass(frozen=True)
class Vm:
    name: str
    host: str | None
    zone: str | None
    powered_on: bool = True


@dataclass(frozen=True)
class HostRule:
    """A cluster's VM-host rule: the VMs of a group must (mandatory) or should run on, or off, some hosts."""

    name: str
    vms: frozenset[str]
    hosts: frozenset[str]
    affine: bool  # run on `hosts` (True) or never on them (False)
    mandatory: bool
    enabled: bool = True


@dataclass(frozen=True)
class Cluster:
    name: str
    hosts: frozenset[str]
    drs_enabled: bool
    rules: tuple[HostRule, ...] = ()


@dataclass(frozen=True)
class Migration:
    """A VM that changed host (vMotion or DRS), as vCenter's event says."""

    time: str  # ISO 8601
    vm: str
    source: str
    target: str
    by_drs: bool


class ZoneFinding(TypedDict):
    kind: FindingKind
    host: str | None
    cluster: str | None
    zones: list[str]
    vms: dict[str, list[str]]  # zone → VM names
    message: str
    allowed: bool  # the policy accepts it (then not a violation)
    why: str  # the accepting rule's reason
    time: NotRequired[str]


class ZoneAudit(TypedDict):
    hosts: int
    vms: int
    zoned_vms: int
    zones: list[str]
    days: int
    appliance_check: bool  # the policy names appliance VMs, so hosts without one are found
    policy: str | None
    findings: list[ZoneFinding]
    violations: int


def load_policy(path: Path | None) -> ZonePolicy:
    """The policy in `path`, or the default (zones from the `vtax.zone` attribute, nothing allowed)."""
    if path is None:
        return ZonePolicy()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    try:
        return ZonePolicy.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "(top)"
        raise InputError(f"{path}: {field}: {error['msg']}") from None


def audit(
    vms: list[Vm],
    *,
    host_clusters: dict[str, str | None],
    appliances: set[str] | None,
    clusters: list[Cluster],
    migrations: list[Migration],
    policy: ZonePolicy,
    days: int,
    policy_path: str | None = None,
) -> ZoneAudit:
    """Every finding on these placements, each marked allowed or not by `policy`; `appliances` None when the
    policy names no appliance VMs (then no host is found wanting one)."""
    findings = co_residency(vms, host_clusters, appliances, policy)
    findings += rule_exposure(vms, clusters, policy)
    findings += migrations_that_mixed(vms, migrations, host_clusters, policy)
    zoned = [vm for vm in vms if vm.zone]
    return {
        "hosts": len(host_clusters),
        "vms": len(vms),
        "zoned_vms": len(zoned),
        "zones": sorted({vm.zone for vm in zoned if vm.zone}),
        "days": days,
        "appliance_check": appliances is not None,
        "policy": policy_path,
        "findings": findings,
        "violations": sum(not f["allowed"] for f in findings),
    }


def audit_agents(agents: list[AgentIdentity], policy: ZonePolicy, policy_path: str | None = None) -> ZoneAudit:
    """The audit of Linux/KVM hypervisors, from the agents registered on a broker: each hypervisor agent names
    the guests it runs (by QEMU's -uuid), each guest agent its BIOS UUID and zone. Guests without an agent have
    no zone; appliance VMs are picked by name (`name_pattern`, `vms`). No cluster rules, no migration history."""
    zone_of: dict[str, str | None] = {}
    for agent in agents:
        if agent.get("vm_uuid"):
            zone_of[str(agent["vm_uuid"]).lower()] = agent.get("zone")
    placed: dict[tuple[str, str], Vm] = {}  # one process serving several agent names reports its guests for each
    for agent in agents:
        for guest in agent.get("guests") or []:
            zone = zone_of.get(guest["uuid"]) or zone_of.get(swapped_uuid(guest["uuid"]) or "")
            placed[(agent["hostname"], guest["uuid"])] = Vm(name=guest["name"], host=agent["hostname"], zone=zone)
    vms = list(placed.values())
    hosts: dict[str, str | None] = {vm.host: None for vm in vms if vm.host}
    if policy.appliances.attribute:
        raise InputError(
            "appliances.attribute: a KVM guest has no custom attributes; pick appliances by name_pattern or vms"
        )
    return audit(
        vms,
        host_clusters=hosts,
        appliances={vm.name for vm in vms if policy.appliances.picks(vm.name, {})}
        if policy.appliances.names_any
        else None,
        clusters=[],
        migrations=[],
        policy=policy,
        days=0,
        policy_path=policy_path,
    )


def _allowance(policy: ZonePolicy, zones: set[str], host: str | None) -> Allowance | None:
    """The first rule that accepts `zones` together on `host` (for a cluster-wide finding, any host)."""
    for rule in policy.allow:
        if zones <= set(rule.zones) and (host is None or fnmatch.fnmatchcase(host, rule.hosts)):
            return rule
    return None


def _by_zone(vms: list[Vm]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for vm in sorted(vms, key=lambda v: v.name):
        if vm.zone:
            grouped.setdefault(vm.zone, []).append(vm.name)
    return grouped


def co_residency(
    vms: list[Vm], host_clusters: dict[str, str | None], appliances: set[str] | None, policy: ZonePolicy
) -> list[ZoneFinding]:
    """Hosts running VMs of more than one zone now; and those of them with no powered-on appliance VM."""
    found: list[ZoneFinding] = []
    on_host: dict[str, list[Vm]] = {}
    for vm in vms:
        if vm.host is not None and vm.powered_on:
            on_host.setdefault(vm.host, []).append(vm)
    for host, here in sorted(on_host.items()):
        zones = _by_zone(here)
        if len(zones) < 2:
            continue
        rule = _allowance(policy, set(zones), host)
        listed = ", ".join(f"{zone} ({len(names)})" for zone, names in zones.items())
        common = {"host": host, "cluster": host_clusters.get(host), "zones": sorted(zones), "vms": zones}
        found.append(
            {
                **common,  # type: ignore[typeddict-item]
                "kind": "co_resident",
                "message": f"host {host} runs VMs of zones {listed}",
                "allowed": rule is not None,
                "why": rule.why if rule else "",
            }
        )
        if appliances is not None and not any(vm.name in appliances for vm in here):
            found.append(
                {
                    **common,  # type: ignore[typeddict-item]
                    "kind": "no_appliance",
                    "message": f"host {host} joins zones {', '.join(zones)} and runs no appliance VM: traffic "
                    "between them never leaves the host and passes no security control",
                    "allowed": not policy.require_appliance,
                    "why": "" if policy.require_appliance else "require_appliance: false",
                }
            )
    return found


def rule_exposure(vms: list[Vm], clusters: list[Cluster], policy: ZonePolicy) -> list[ZoneFinding]:
    """Zone pairs in one cluster whose VMs its mandatory VM-host rules do not keep on disjoint hosts: DRS (or
    an operator's vMotion) may put them together. Should-rules do not count: DRS breaks them under load."""
    found: list[ZoneFinding] = []
    for cluster in clusters:
        members = [vm for vm in vms if vm.host in cluster.hosts and vm.zone]
        zones = _by_zone(members)
        reach = {zone: _reach(names, cluster) for zone, names in zones.items()}
        for first, second in itertools.combinations(sorted(zones), 2):
            shared = reach[first][0] & reach[second][0]
            if not shared:
                continue
            rule = _allowance(policy, {first, second}, None)
            unbound = sorted(reach[first][1] | reach[second][1])
            why = (
                f"{len(unbound)} of their VMs are in no mandatory VM-host rule ({', '.join(unbound[:5])})"
                if unbound
                else "their mandatory VM-host rules overlap"
            )
            mover = "DRS" if cluster.drs_enabled else "a vMotion (DRS is off)"
            found.append(
                {
                    "kind": "drs_may_mix",
                    "host": None,
                    "cluster": cluster.name,
                    "zones": [first, second],
                    "vms": {first: zones[first], second: zones[second]},
                    "message": f"cluster {cluster.name}: {mover} may put zones {first} and {second} on one of "
                    f"{len(shared)} host(s) ({', '.join(sorted(shared)[:5])}): {why}",
                    "allowed": rule is not None,
                    "why": rule.why if rule else "",
                }
            )
    return found


def _reach(vm_names: list[str], cluster: Cluster) -> tuple[set[str], set[str]]:
    """The hosts any of these VMs may run on under the cluster's mandatory rules, and the VMs no mandatory rule
    binds (each of those may run anywhere)."""
    reach: set[str] = set()
    unbound: set[str] = set()
    for name in vm_names:
        allowed = set(cluster.hosts)
        bound = False
        for rule in cluster.rules:
            if rule.enabled and rule.mandatory and name in rule.vms:
                allowed = allowed & rule.hosts if rule.affine else allowed - rule.hosts
                bound = True
        if not bound:
            unbound.add(name)
        reach |= allowed
    return reach, unbound


def migrations_that_mixed(
    vms: list[Vm], migrations: list[Migration], host_clusters: dict[str, str | None], policy: ZonePolicy
) -> list[ZoneFinding]:
    """Migrations that put a VM on a host carrying another zone at that moment. Where each VM was is replayed
    from where it is now, undoing the migrations newest first, then applying them in order."""
    zone_of = {vm.name: vm.zone for vm in vms}
    where = {vm.name: vm.host for vm in vms}
    ordered = sorted(migrations, key=lambda m: m.time)
    for move in reversed(ordered):
        if move.vm in where:
            where[move.vm] = move.source
    found: list[ZoneFinding] = []
    for move in ordered:
        if move.vm not in where:
            continue
        where[move.vm] = move.target
        zone = zone_of.get(move.vm)
        if not zone:
            continue
        there = [
            Vm(name=name, host=host, zone=zone_of.get(name)) for name, host in where.items() if host == move.target
        ]
        zones = _by_zone(there)
        if len(zones) < 2:
            continue
        rule = _allowance(policy, set(zones), move.target)
        others = ", ".join(z for z in zones if z != zone)
        found.append(
            {
                "kind": "migration_mixed",
                "host": move.target,
                "cluster": host_clusters.get(move.target),
                "zones": sorted(zones),
                "vms": zones,
                "message": f"{'DRS' if move.by_drs else 'a vMotion'} moved {move.vm} (zone {zone}) from "
                f"{move.source} to {move.target}, which then ran zone(s) {others}",
                "allowed": rule is not None,
                "why": rule.why if rule else "",
                "time": move.time,
            }
        )
    return found
