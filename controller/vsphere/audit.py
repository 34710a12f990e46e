"""`vtax audit zones`, read from vCenter: every VM's host and zone, the appliance VMs, each cluster's DRS
state and VM-host rules, and the migrations of the last days; `controller.zones` decides what they mean.

Everything comes from a few bulk reads (the inventory's property collector, one per cluster for its rules)
and an event collector paged through the migration events, so a large vCenter is audited in seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pyVmomi import vim

from controller.spec import VsphereSpec, ZoneSource
from controller.vsphere.connection import Vcenter
from controller.vsphere.inventory import Inventory, migration_events, retrieve
from controller.zones import Cluster, HostRule, Migration, Vm, ZoneAudit, ZonePolicy, audit


def audit_vcenter(vcenter: Vcenter, policy: ZonePolicy, *, days: int, policy_path: str | None = None) -> ZoneAudit:
    """The zone audit of everything this vCenter manages."""
    inventory = Inventory(vcenter=vcenter)
    return audit_inventory(inventory, policy, days=days, policy_path=policy_path)


def audit_inventory(
    inventory: Inventory,
    policy: ZonePolicy,
    *,
    days: int,
    policy_path: str | None = None,
    since: datetime | None = None,
) -> ZoneAudit:
    """The zone audit of a read inventory; migrations from `since` (default: `days` ago) until now."""
    selector = policy.appliances
    on = {vm.name for vm in inventory.appliances(selector) if vm.power == "poweredOn"}
    appliances = on if selector.names_any else None
    begin = since or datetime.now(UTC) - timedelta(days=days)
    events = migration_events(inventory.vcenter, begin, datetime.now(UTC) + timedelta(minutes=1))
    return audit(
        placements(inventory, policy.zones),
        host_clusters=host_clusters(inventory),
        appliances=appliances,
        clusters=_clusters(inventory),
        migrations=migrations(events),
        policy=policy,
        days=days,
        policy_path=policy_path,
    )


def watch_policy(spec: VsphereSpec) -> ZonePolicy:
    """The zone policy a run's `vsphere.watch_zones` stands for: the spec's zones and appliances, its allowances."""
    assert spec.zones is not None and spec.watch_zones is not None  # the spec's validator sees to it
    return ZonePolicy(zones=spec.zones, appliances=spec.appliances, allow=spec.watch_zones.allow)


def placements(inventory: Inventory, zones: ZoneSource, now: dict[str, str | None] | None = None) -> list[Vm]:
    """Every VM with its host's name and its zone; `now` (VM moid → host moid) where a fresher reading is at
    hand than the inventory's."""
    hosts = inventory.hosts
    found = []
    for vm in inventory.vms.values():
        host = now.get(vm.moid, vm.host) if now is not None else vm.host
        found.append(
            Vm(
                name=vm.name,
                host=hosts[host].name if host in hosts else None,
                zone=inventory.zone_of(vm, zones),
                powered_on=vm.power == "poweredOn",
            )
        )
    return found


def host_clusters(inventory: Inventory) -> dict[str, str | None]:
    return {host.name: host.cluster for host in inventory.hosts.values()}


def migrations(events: list[Any]) -> list[Migration]:
    """vCenter's migration events as the zone audit reads them."""
    return [
        Migration(
            time=event.createdTime.isoformat(),
            vm=event.vm.name,
            source=getattr(getattr(event, "sourceHost", None), "name", None) or "?",
            target=event.host.name if event.host is not None else "?",
            by_drs=isinstance(event, vim.event.DrsVmMigratedEvent),
        )
        for event in events
        if event.vm is not None
    ]


def _clusters(inventory: Inventory) -> list[Cluster]:
    """Each cluster's hosts, DRS state and VM-host rules (groups resolved to VM and host names)."""
    vm_names = {moid: vm.name for moid, vm in inventory.vms.items()}
    host_names = {moid: host.name for moid, host in inventory.hosts.items()}
    found = []
    for _, props in retrieve(
        inventory.vcenter.content, vim.ClusterComputeResource, ["name", "host", "configurationEx"]
    ):
        config = props.get("configurationEx")
        groups: dict[str, frozenset[str]] = {}
        for group in getattr(config, "group", None) or []:
            members: list[Any] = list(getattr(group, "vm", None) or getattr(group, "host", None) or [])
            names = vm_names if isinstance(group, vim.cluster.VmGroup) else host_names
            groups[group.name] = frozenset(names.get(m._moId, m._moId) for m in members)
        rules = []
        for rule in getattr(config, "rule", None) or []:
            if not isinstance(rule, vim.cluster.VmHostRuleInfo):
                continue  # VM-VM (anti-)affinity keeps single VMs apart or together, not zones
            affine = bool(rule.affineHostGroupName)
            rules.append(
                HostRule(
                    name=rule.name,
                    vms=groups.get(rule.vmGroupName, frozenset()),
                    hosts=groups.get(rule.affineHostGroupName if affine else rule.antiAffineHostGroupName, frozenset()),
                    affine=affine,
                    mandatory=bool(rule.mandatory),
                    enabled=rule.enabled is not False,
                )
            )
        drs = getattr(getattr(config, "drsConfig", None), "enabled", False)
        found.append(
            Cluster(
                name=props["name"],
                hosts=frozenset(host_names.get(h._moId, h._moId) for h in props.get("host") or []),
                drs_enabled=bool(drs),
                rules=tuple(rules),
            )
        )
    return found
