"""`vtax deploy`: agent VMs cloned from a template, spread over hosts, configured through guestinfo, and removed
again by the custom attribute that marks them, never by name.

A plan comes first (`plan`: which clone goes on which host, under which name), so `--dry-run` prints exactly
what would be made. Clones run a few at a time (vCenter queues provisioning beyond its own limits anyway);
each failure is that VM's, with vCenter's words, and the others go on.
"""

from __future__ import annotations

import base64
import fnmatch
import re
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypedDict

import yaml
from pyVmomi import vim

from agent.instance import INSTANCE_FILE
from controller.errors import InputError, SpecError
from controller.spec import DeployGroup
from controller.vsphere.connection import Vcenter, describe_fault
from controller.vsphere.inventory import HostInfo, Inventory, VmInfo, retrieve

MARK = "vtax.deployment"  # custom attribute whose value names the deployment a VM belongs to
GUESTINFO = "guestinfo.vtax."  # extraConfig keys the agent reads at start (agent.instance)
PARALLEL = 8  # clones at once: vCenter's default of 8 provisioning operations per host, across all hosts here
POLL_S = 0.2


@dataclass(frozen=True)
class Clone:
    name: str
    host: str  # host name


class Created(TypedDict):
    vm: str
    host: str
    ok: bool
    reason: str  # why it failed: vCenter's fault, or the host's state


def vm_name(zone: str, host: str, n: int) -> str:
    """`vtax-<zone>-<host>-<n>` (the host's first label): letters, digits and dashes, so also a valid agent name."""

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")

    return f"vtax-{clean(zone)}-{clean(host.split('.')[0])}-{n}"


def plan(hosts: list[str], count: int, zone: str, taken: Collection[str] = ()) -> list[Clone]:
    """`count` clones spread evenly over `hosts` (round robin, in the order given), numbered per host after the
    names already `taken`."""
    if not hosts:
        raise InputError("deploy: no host to place clones on (--hosts / --cluster match none)")
    numbers = {host: 0 for host in hosts}
    found = []
    for i in range(count):
        host = hosts[i % len(hosts)]
        numbers[host] += 1
        while vm_name(zone, host, numbers[host]) in taken:
            numbers[host] += 1
        found.append(Clone(name=vm_name(zone, host, numbers[host]), host=host))
    return found


def settings(
    clone: Clone, *, zone: str, broker: str, allow: list[str], influx: str | None, cloud_init: bool = False
) -> dict[str, str]:
    """The extraConfig that gives a clone's agent its settings: guestinfo.vtax.* keys, or (`cloud_init`) cloud-init
    user data that writes them to the agent's instance file. No secret: the broker user's password and
    certificates are in the template (secure deployment), the same for every agent, and guestinfo is readable
    in vCenter."""
    values = {"name": clone.name, "zone": zone, "broker": broker, "allow": " ".join(allow)}
    if influx:
        values["influx"] = influx
    if not cloud_init:
        return {f"{GUESTINFO}{key}": value for key, value in values.items()}
    # cloud-init's VMware datasource: metadata and user data in guestinfo, base64-encoded
    metadata = {"instance-id": clone.name, "local-hostname": clone.name}
    userdata = "#cloud-config\n" + yaml.safe_dump(
        {"write_files": [{"path": str(INSTANCE_FILE), "permissions": "0644", "content": yaml.safe_dump(values)}]}
    )
    return {
        "guestinfo.metadata": _base64(yaml.safe_dump(metadata)),
        "guestinfo.metadata.encoding": "base64",
        "guestinfo.userdata": _base64(userdata),
        "guestinfo.userdata.encoding": "base64",
    }


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def plan_groups(inventory: Inventory, groups: list[DeployGroup], source: str) -> list[tuple[int, Clone]]:
    """A spec's `deploy.groups` planned in order (each group's index with each of its clones), no name twice."""
    taken = {vm.name for vm in inventory.vms.values()}
    planned: list[tuple[int, Clone]] = []
    for index, group in enumerate(groups):
        hosts = [h.name for h in choose_hosts(inventory, pattern=group.hosts, cluster=group.cluster)]
        if not hosts:
            field = "hosts" if group.hosts is not None else "cluster"
            raise SpecError(source, f"deploy.groups[{index}].{field}", "matches no host in vCenter")
        clones = plan(hosts, group.count, group.zone, taken)
        taken |= {clone.name for clone in clones}
        planned += [(index, clone) for clone in clones]
    return planned


def choose_hosts(inventory: Inventory, *, pattern: str | None, cluster: str | None) -> list[HostInfo]:
    """Hosts by shell-style name pattern and/or cluster, sorted by name."""
    found = [
        host
        for host in inventory.hosts.values()
        if (pattern is None or fnmatch.fnmatchcase(host.name, pattern)) and (cluster is None or host.cluster == cluster)
    ]
    return sorted(found, key=lambda h: h.name)


class Deployer:
    """Clones, configures and powers on agent VMs of one deployment; finds and removes them again."""

    def __init__(self, vcenter: Vcenter, deployment: str) -> None:
        self.vcenter = vcenter
        self.deployment = deployment
        self.inventory = Inventory(vcenter=vcenter)

    def template(self, name: str) -> Any:
        vm = self.inventory.vm_named(name)
        if vm is None:
            raise InputError(f"--template: no VM or template named {name!r} in vCenter")
        return vm.ref

    def mine(self) -> list[VmInfo]:
        """The VMs this deployment made: by the attribute it set, never by name; read afresh, so the VMs made
        since this deployer was created are among them."""
        return [vm for vm in Inventory(vcenter=self.vcenter).vms.values() if vm.attributes.get(MARK) == self.deployment]

    def create(
        self,
        clones: list[Clone],
        *,
        template: str,
        guestinfo: Callable[[Clone], dict[str, str]],
        network: str | None = None,
        datastore: str | None = None,
        linked: bool = False,
        parallel: int = PARALLEL,
        on_done: Callable[[Created], None] = lambda created: None,
    ) -> list[Created]:
        """Clone each of `clones` onto its host, mark it, configure it and power it on; a host that cannot take
        VMs (maintenance mode, disconnected) fails its clones at once with that reason."""
        source = self.template(template)
        snapshot = _snapshot(source) if linked else None
        field = _mark_field(self.vcenter)
        hosts = {host.name: host for host in self.inventory.hosts.values()}
        network_ref = self._network(network) if network else None
        datastore_ref = self._datastore(datastore) if datastore else None

        def one(clone: Clone) -> Created:
            host = hosts.get(clone.host)
            refusal = _unfit(host)
            if refusal:
                return {"vm": clone.name, "host": clone.host, "ok": False, "reason": refusal}
            assert host is not None
            try:
                vm = self._clone(source, clone, host, guestinfo(clone), snapshot, network_ref, datastore_ref)
                self.vcenter.content.customFieldsManager.SetField(entity=vm, key=field, value=self.deployment)
                if vm.runtime.host is None or vm.runtime.host._moId != host.moid:
                    # vcsim ignores location.host, and a fully automated DRS may place a clone elsewhere first
                    _wait(
                        vm.RelocateVM_Task(spec=vim.vm.RelocateSpec(host=host.ref, pool=host.ref.parent.resourcePool))
                    )
                _wait(vm.PowerOnVM_Task())
            except _Failed as exc:
                return {"vm": clone.name, "host": clone.host, "ok": False, "reason": str(exc)}
            return {"vm": clone.name, "host": clone.host, "ok": True, "reason": ""}

        results: list[Created] = []
        with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="clone") as pool:
            for created in pool.map(one, clones):
                results.append(created)
                on_done(created)
        return results

    def why_silent(self, names: list[str]) -> dict[str, str]:
        """What vCenter shows of each VM whose agent has not registered: a question waiting on its console, its
        power, VMware Tools, its address; else where to look next."""
        vms = {vm.name: vm for vm in self.mine()}
        return {name: _silence(vms[name].ref) if name in vms else "its VM is gone" for name in names}

    def destroy(self, parallel: int = PARALLEL, on_done: Callable[[str], None] = lambda name: None) -> list[str]:
        """Power off and delete every VM of this deployment; returns their names."""

        def one(vm: VmInfo) -> str:
            if str(vm.ref.runtime.powerState) == "poweredOn":
                _wait(vm.ref.PowerOffVM_Task())
            _wait(vm.ref.Destroy_Task())
            return vm.name

        removed = []
        with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="destroy") as pool:
            for name in pool.map(one, self.mine()):
                removed.append(name)
                on_done(name)
        return sorted(removed)

    def _clone(
        self,
        source: Any,
        clone: Clone,
        host: HostInfo,
        extra: dict[str, str],
        snapshot: Any,
        network: Any,
        datastore: Any,
    ) -> Any:
        location = vim.vm.RelocateSpec(host=host.ref, pool=host.ref.parent.resourcePool, datastore=datastore)
        if snapshot is not None:
            location.diskMoveType = "createNewChildDiskBacking"
        config = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in extra.items()])
        if network is not None:
            config.deviceChange = _nics_to(source, network)
        spec = vim.vm.CloneSpec(location=location, config=config, powerOn=False, template=False, snapshot=snapshot)
        folder = source.parent if isinstance(source.parent, vim.Folder) else self.vcenter.content.rootFolder
        task = source.CloneVM_Task(folder=folder, name=clone.name, spec=spec)
        return _wait(task)

    def _network(self, name: str) -> Any:
        return self._named(vim.Network, name, "--network: no port group")

    def _datastore(self, name: str) -> Any:
        return self._named(vim.Datastore, name, "--datastore: no datastore")

    def _named(self, kind: type, name: str, missing: str) -> Any:
        found = next(
            (obj for obj, props in retrieve(self.vcenter.content, kind, ["name"]) if props.get("name") == name), None
        )
        if found is None:
            raise InputError(f"{missing} named {name!r}")
        return found


class _Failed(Exception):
    """A vCenter task that ended in error: its fault, in words."""


def _wait(task: Any) -> Any:
    while task.info.state in (vim.TaskInfo.State.queued, vim.TaskInfo.State.running):
        time.sleep(POLL_S)
    if task.info.state == vim.TaskInfo.State.error:
        raise _Failed(describe_fault(task.info.error))
    return task.info.result


def _silence(vm: Any) -> str:
    """One VM's state, as far as it explains a silent agent."""
    runtime, guest = vm.runtime, vm.guest
    if runtime.question is not None:
        return f"its console waits for an answer: {runtime.question.text!r}"
    if str(runtime.powerState) != "poweredOn":
        return f"its VM is {runtime.powerState}"
    if guest is None or str(guest.toolsRunningStatus) != "guestToolsRunning":
        return "VMware Tools do not run in it: has the guest booted? (the VM's console)"
    if not guest.ipAddress:
        return "the guest has no IP address: does DHCP answer on its port group?"
    return (
        f"the guest runs, at {guest.ipAddress}: see `journalctl -u vtax-agent` in it (can it reach the broker? "
        "its credentials?)"
    )


def _unfit(host: HostInfo | None) -> str:
    """Why a host cannot take a new VM now, or ''."""
    if host is None:
        return "no such host"
    runtime = host.ref.runtime
    if runtime.inMaintenanceMode:
        return f"host {host.name} is in maintenance mode"
    if str(runtime.connectionState) != "connected":
        return f"host {host.name} is {runtime.connectionState}"
    return ""


def _snapshot(source: Any) -> Any:
    """The template's current snapshot, for linked clones; an error when it has none."""
    snapshot = source.snapshot.currentSnapshot if source.snapshot is not None else None
    if snapshot is None:
        raise InputError(f"--linked-clone: template {source.name!r} has no snapshot to link the clones to")
    return snapshot


def _mark_field(vcenter: Vcenter) -> int:
    manager = vcenter.content.customFieldsManager
    for field in manager.field:
        if field.name == MARK and field.managedObjectType in (None, vim.VirtualMachine):
            return int(field.key)
    return int(manager.AddCustomFieldDef(name=MARK, moType=vim.VirtualMachine).key)


def _nics_to(source: Any, network: Any) -> list[Any]:
    """Device changes that connect every NIC of the template to `network` (a standard or distributed port
    group)."""
    changes = []
    for device in source.config.hardware.device:
        if not isinstance(device, vim.vm.device.VirtualEthernetCard):
            continue
        if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
            port = vim.dvs.PortConnection(
                portgroupKey=network.key, switchUuid=network.config.distributedVirtualSwitch.uuid
            )
            device.backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
        else:
            device.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
                network=network, deviceName=network.name
            )
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=device))
    return changes
