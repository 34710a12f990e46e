"""The vSphere inventory as vtax sees it: each agent's VM, host, cluster and zone, and the appliance VMs.

Everything is read in a few bulk property-collector calls (a 2,000-VM inventory in one pass), then agents
are matched to VMs by the BIOS UUID they report (SearchIndex.FindByUuid, trying both byte orders a guest
may read it in), then by VM name, then by IP address.
"""

from __future__ import annotations

import fnmatch
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyVmomi import vim, vmodl

from agent.identity import swapped_uuid
from controller.spec import ApplianceSelector, ZoneSource
from controller.vsphere.connection import Vcenter


@dataclass
class HostInfo:
    moid: str
    name: str
    cluster: str | None
    ref: Any = field(repr=False)


@dataclass
class VmInfo:
    moid: str
    name: str
    uuid: str | None
    host: str | None  # host moid
    power: str
    num_cpu: int
    addresses: list[str]
    folder: str | None
    networks: list[str]
    attributes: dict[str, str]
    ref: Any = field(repr=False)


@dataclass
class AgentVm:
    """One agent's place in vSphere; `how` says which rule found its VM."""

    agent: str
    vm: VmInfo | None
    how: str
    host: HostInfo | None = None
    zone: str | None = None


def retrieve(content: Any, kind: type, paths: list[str]) -> list[tuple[Any, dict[str, Any]]]:
    """(object, {path: value}) for every object of `kind`, paged through RetrievePropertiesEx."""
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        traversal = vmodl.query.PropertyCollector.TraversalSpec(name="view", path="view", type=vim.view.ContainerView)
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traversal])],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=paths)],
        )
        collector = content.propertyCollector
        result = collector.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
        found = []
        while result is not None:
            found += [(o.obj, {p.name: p.val for p in o.propSet}) for o in result.objects]
            result = collector.ContinueRetrievePropertiesEx(result.token) if result.token else None
        return found
    finally:
        view.Destroy()


MIGRATION_EVENTS = ["VmMigratedEvent", "DrsVmMigratedEvent", "VmRelocatedEvent", "VmBeingHotMigratedEvent"]
EVENT_PAGE = 1000  # events read per call: vCenter's own largest page


def migration_events(vcenter: Vcenter, begin: datetime, end: datetime) -> list[Any]:
    """Every VM migration event between `begin` and `end`, oldest first, paged through an event collector (a
    plain query stops at 1,000 events, which a busy DRS cluster makes in days)."""
    manager = vcenter.content.eventManager
    if manager is None:
        return []
    spec = vim.event.EventFilterSpec(
        eventTypeId=MIGRATION_EVENTS, time=vim.event.EventFilterSpec.ByTime(beginTime=begin, endTime=end)
    )
    collector = manager.CreateCollectorForEvents(spec)
    try:
        collector.RewindCollector()
        found: list[Any] = []
        while page := collector.ReadNextEvents(EVENT_PAGE):
            found += page
        return sorted((e for e in found if begin <= e.createdTime <= end), key=lambda e: e.createdTime)
    finally:
        collector.DestroyCollector()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class Inventory:
    """A snapshot of hosts and VMs, read once; `refresh_hosts` re-reads where VMs run."""

    def __init__(self, *, vcenter: Vcenter) -> None:
        self.vcenter = vcenter
        content = vcenter.content
        fields = {f.key: f.name for f in (content.customFieldsManager.field if content.customFieldsManager else [])}
        names = {o._moId: p.get("name") for o, p in retrieve(content, vim.ManagedEntity, ["name"])}
        networks = {o._moId: p.get("name") for o, p in retrieve(content, vim.Network, ["name"])}
        clusters = {o._moId for o, _ in retrieve(content, vim.ClusterComputeResource, ["name"])}
        self.hosts: dict[str, HostInfo] = {}
        for obj, props in retrieve(content, vim.HostSystem, ["name", "parent"]):
            parent = props.get("parent")
            cluster = names.get(parent._moId) if parent is not None and parent._moId in clusters else None
            self.hosts[obj._moId] = HostInfo(moid=obj._moId, name=props["name"], cluster=cluster, ref=obj)
        self.vms: dict[str, VmInfo] = {}
        paths = [
            "name",
            "config.uuid",
            "runtime.host",
            "runtime.powerState",
            "summary.config.numCpu",
            "guest.ipAddress",
            "guest.net",
            "parent",
            "network",
            "customValue",
        ]
        for obj, props in retrieve(content, vim.VirtualMachine, paths):
            addresses = [props["guest.ipAddress"]] if props.get("guest.ipAddress") else []
            for nic in props.get("guest.net") or []:
                addresses += [a for a in nic.ipAddress or [] if a not in addresses]
            host, parent = props.get("runtime.host"), props.get("parent")
            self.vms[obj._moId] = VmInfo(
                moid=obj._moId,
                name=props["name"],
                uuid=(props.get("config.uuid") or "").lower() or None,
                host=host._moId if host is not None else None,
                power=str(props.get("runtime.powerState", "unknown")),
                num_cpu=int(props.get("summary.config.numCpu") or 1),
                addresses=addresses,
                folder=names.get(parent._moId) if parent is not None else None,
                networks=[networks.get(n._moId, n._moId) for n in props.get("network") or []],
                attributes={fields.get(v.key, str(v.key)): v.value for v in props.get("customValue") or []},
                ref=obj,
            )
        self._by_name = {vm.name: vm for vm in self.vms.values()}

    def vm_named(self, name: str) -> VmInfo | None:
        return self._by_name.get(name)

    def host_of(self, vm: VmInfo) -> HostInfo | None:
        return self.hosts.get(vm.host) if vm.host else None

    def host_named(self, name: str) -> HostInfo | None:
        return next((h for h in self.hosts.values() if h.name == name or h.moid == name), None)

    def find_by_uuid(self, text: str) -> tuple[VmInfo | None, str]:
        """The VM with this BIOS UUID, through the server's SearchIndex, in either byte order."""
        index = self.vcenter.content.searchIndex
        for candidate, how in ((text.lower(), "uuid"), (swapped_uuid(text), "uuid (byte-swapped)")):
            if candidate is None:
                continue
            found = index.FindByUuid(uuid=candidate, vmSearch=True, instanceUuid=False)
            if found is not None and found._moId in self.vms:
                return self.vms[found._moId], how
        return None, ""

    def match(self, *, agent: str, wanted: str | None, reported_uuid: str | None, address: str | None) -> AgentVm:
        """An agent's VM: the spec's `vm` (name or UUID), else the reported UUID, else its name, else its address."""
        if wanted is not None:
            vm, how = self.find_by_uuid(wanted) if _is_uuid(wanted) else (self.vm_named(wanted), "spec vm name")
            return AgentVm(agent=agent, vm=vm, how=how if vm is not None else f"no VM {wanted!r}")
        if reported_uuid:
            vm, how = self.find_by_uuid(reported_uuid)
            if vm is not None:
                return AgentVm(agent=agent, vm=vm, how=how)
        if (vm := self.vm_named(agent)) is not None:
            return AgentVm(agent=agent, vm=vm, how="name")
        if address:
            vm = next((v for v in self.vms.values() if address in v.addresses), None)
            if vm is not None:
                return AgentVm(agent=agent, vm=vm, how="ip")
        return AgentVm(agent=agent, vm=None, how="not found")

    def zone_of(self, vm: VmInfo, source: ZoneSource) -> str | None:
        """The VM's zone by the configured rule, or None where the rule finds nothing."""
        if source.source == "attribute":
            return vm.attributes.get(source.attribute) or None
        candidates = [vm.folder] if source.source == "folder" else vm.networks
        pattern = re.compile(source.pattern)
        for name in candidates:
            found = pattern.search(name or "")
            if found:
                return found.groupdict().get("zone") or found.group(0)
        return None

    def appliances(self, selector: ApplianceSelector, hosts: set[str] | None = None) -> list[VmInfo]:
        """Appliance VMs, optionally only those on the given host moids."""
        found = [
            vm
            for vm in self.vms.values()
            if selector.picks(vm.name, vm.attributes) and (hosts is None or vm.host in hosts)
        ]
        return sorted(found, key=lambda v: v.name)

    def select(self, patterns: list[str]) -> list[VmInfo]:
        """VMs by name or shell-style pattern."""
        return sorted(
            (vm for vm in self.vms.values() if any(fnmatch.fnmatchcase(vm.name, p) for p in patterns)),
            key=lambda v: v.name,
        )

    def current_hosts(self, vms: list[VmInfo]) -> dict[str, str | None]:
        """Where each VM runs now (moid → host moid), read fresh from the server."""
        hosts: dict[str, str | None] = {vm.moid: None for vm in vms}
        if not vms:
            return hosts
        collector = self.vcenter.content.propertyCollector
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=vm.ref) for vm in vms],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=["runtime.host"])],
        )
        for obj in collector.RetrieveContents([spec]):
            for missing in obj.missingSet or []:
                raise missing.fault  # not readable (no session, no permission): an error, never "no host"
            value = next((p.val for p in obj.propSet if p.name == "runtime.host"), None)
            hosts[obj.obj._moId] = value._moId if value is not None else None
        return hosts


def map_agents(
    inventory: Inventory,
    *,
    agents: list[dict[str, Any]],
    zones: ZoneSource | None,
) -> dict[str, AgentVm]:
    """Each agent (name, vm, vm_uuid, address) mapped to its VM, host and zone."""
    mapped = {}
    for agent in agents:
        found = inventory.match(
            agent=agent["name"],
            wanted=agent.get("vm"),
            reported_uuid=agent.get("vm_uuid"),
            address=agent.get("address"),
        )
        if found.vm is not None:
            found.host = inventory.host_of(found.vm)
            found.zone = inventory.zone_of(found.vm, zones) if zones is not None else None
        mapped[agent["name"]] = found
    return mapped
