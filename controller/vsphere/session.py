"""One run's view of vSphere: the connection, the inventory, where each agent lives (VM, host, zone), and
the appliance VMs on the agents' hosts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.wire import AgentIdentity
from controller.errors import InputError
from controller.runloop import Placement, Placer
from controller.spec import Experiment, VsphereSpec
from controller.vsphere.audit import audit_inventory, watch_policy
from controller.vsphere.connection import Vcenter
from controller.vsphere.inventory import AgentVm, Inventory, VmInfo, map_agents
from controller.vsphere.perf import PerfReader


class Vsphere:
    """One run's view of vSphere: the connection, the inventory, where each agent lives."""

    def __init__(self, *, vcenter: Vcenter, spec: VsphereSpec) -> None:
        self.vcenter = vcenter
        self.spec = spec
        self.inventory = Inventory(vcenter=vcenter)
        self.agents: dict[str, AgentVm] = {}
        self._reader: PerfReader | None = None

    def reread(self) -> None:
        """Read the inventory again: VMs were made (a run's deployment) since it was read."""
        self.inventory = Inventory(vcenter=self.vcenter)

    @property
    def reader(self) -> PerfReader:
        if self._reader is None:
            self._reader = PerfReader(vcenter=self.vcenter)
        return self._reader

    def map(self, agents: list[dict[str, Any]]) -> dict[str, AgentVm]:
        """Map agents (name, vm, vm_uuid, address) to VMs; an agent without a VM is an input error."""
        self.agents = map_agents(self.inventory, agents=agents, zones=self.spec.zones)
        lost = [a for a in self.agents.values() if a.vm is None]
        if lost:
            names = ", ".join(f"{a.agent} ({a.how})" for a in lost)
            raise InputError(
                f"vCenter: no VM found for agent(s) {names}; set `vm:` (name or BIOS UUID) on the agent in the spec"
            )
        return self.agents

    def describe(self) -> dict[str, Any]:
        """Where the agents are (VM, how it was found, host, cluster, zone) and the appliance VMs on their hosts:
        for `vtax inventory` and the run's result."""
        hosts = self.inventory.hosts
        agents = {
            name: {
                "vm": found.vm.name if found.vm else None,
                "found_by": found.how,
                "uuid": found.vm.uuid if found.vm else None,
                "host": found.host.name if found.host else None,
                "cluster": found.host.cluster if found.host else None,
                "zone": found.zone,
                "power": found.vm.power if found.vm else None,
            }
            for name, found in self.agents.items()
        }
        on = {a.vm.host for a in self.agents.values() if a.vm is not None and a.vm.host}
        appliances = [
            {"vm": vm.name, "host": hosts[vm.host].name if vm.host in hosts else None, "power": vm.power}
            for vm in self.appliance_vms(on)
        ]
        described = {"server": self.vcenter.about, "agents": agents, "appliances": appliances}
        if self.spec.watch_zones is not None:
            described["zones"] = audit_inventory(self.inventory, watch_policy(self.spec), days=1)  # as the run starts
        return described

    def agent_vms(self) -> list[VmInfo]:
        return [a.vm for a in self.agents.values() if a.vm is not None]

    def appliance_vms(self, hosts: set[str] | None = None) -> list[VmInfo]:
        return self.inventory.appliances(self.spec.appliances, hosts)


def guest_agents(experiment: Experiment, identity: Callable[[str], AgentIdentity | None]) -> list[dict[str, Any]]:
    """The experiment's agents that live in VMs (not hypervisor agents), with what each reported of itself."""
    guests = []
    for agent in experiment.agents:
        if agent.hypervisor:
            continue
        registered = identity(agent.name) or {}
        guests.append(
            {
                "name": agent.name,
                "vm": agent.vm,
                "vm_uuid": registered.get("vm_uuid"),
                "address": registered.get("address"),
            }
        )
    return guests


def placer(vsphere: Vsphere, experiment: Experiment) -> Placer:
    """The run loop's placement: every guest agent mapped to its VM, host and zone (an agent without a VM is an
    input error); the zones vSphere knows, and where everything is, kept with the run as its `vsphere` note."""

    def place(identity: Callable[[str], AgentIdentity | None]) -> Placement:
        placed = vsphere.map(guest_agents(experiment, identity))
        return {"zones": {name: found.zone for name, found in placed.items()}, "notes": {"vsphere": vsphere.describe()}}

    return place
