"""Built-in vSphere actions for condition hooks: power appliance VMs on or off, relocate agent VMs, set a
custom attribute, wait for a state. Each waits for its tasks and fails with one line naming the VM."""

from __future__ import annotations

import time
from typing import Any

from pyVmomi import vim, vmodl

from controller.errors import HookError
from controller.spec import VsphereAction
from controller.vsphere.connection import describe_fault
from controller.vsphere.inventory import VmInfo
from controller.vsphere.session import Vsphere

POLL_S = 0.2


def _targets(vsphere: Vsphere, action: VsphereAction) -> list[VmInfo]:
    found: dict[str, VmInfo] = {}
    for pattern in action.vms:
        if pattern == "agents":
            chosen = vsphere.agent_vms()
        elif pattern == "appliances":
            chosen = vsphere.appliance_vms()
        else:
            chosen = vsphere.inventory.select([pattern])
        found |= {vm.moid: vm for vm in chosen}
    if not found:
        raise HookError(f"{action}: no VM matches {', '.join(action.vms)}")
    return sorted(found.values(), key=lambda vm: vm.name)


def _wait_tasks(tasks: list[tuple[VmInfo, Any]], action: VsphereAction, deadline: float) -> None:
    for vm, task in tasks:
        while task.info.state in (vim.TaskInfo.State.queued, vim.TaskInfo.State.running):
            if time.time() > deadline:
                raise HookError(f"{action}: {vm.name}: task not done after {action.timeout:g} s")
            time.sleep(POLL_S)
        if task.info.state == vim.TaskInfo.State.error:
            raise HookError(f"{action}: {vm.name}: {describe_fault(task.info.error)}")


def _least_busy_host(vsphere: Vsphere, cluster: str) -> Any:
    hosts = [h for h in vsphere.inventory.hosts.values() if h.cluster == cluster]
    if not hosts:
        raise HookError(f"relocate: no cluster {cluster!r} with hosts")
    return min(hosts, key=lambda h: h.ref.summary.quickStats.overallCpuUsage or 0)


def _power(vsphere: Vsphere, action: VsphereAction, vms: list[VmInfo], deadline: float) -> None:
    wanted = "poweredOn" if action.vsphere == "power_on" else "poweredOff"
    tasks = []
    for vm in vms:
        if str(vm.ref.runtime.powerState) != wanted:
            tasks.append((vm, vm.ref.PowerOnVM_Task() if wanted == "poweredOn" else vm.ref.PowerOffVM_Task()))
    _wait_tasks(tasks, action, deadline)


def _relocate(vsphere: Vsphere, action: VsphereAction, vms: list[VmInfo], deadline: float) -> None:
    if action.host is not None:
        host = vsphere.inventory.host_named(action.host)
        if host is None:
            raise HookError(f"{action}: no host {action.host!r}")
    else:
        host = _least_busy_host(vsphere, action.cluster or "")
    tasks = []
    for vm in vms:
        if vm.ref.runtime.host is None or vm.ref.runtime.host._moId != host.moid:
            spec = vim.vm.RelocateSpec(host=host.ref, pool=host.ref.parent.resourcePool)
            tasks.append((vm, vm.ref.RelocateVM_Task(spec=spec)))
    _wait_tasks(tasks, action, deadline)
    for vm in vms:
        vm.host = host.moid


def _set_attribute(vsphere: Vsphere, action: VsphereAction, vms: list[VmInfo], deadline: float) -> None:
    manager = vsphere.vcenter.content.customFieldsManager
    fields = [f for f in manager.field if f.name == action.attribute]
    field = next((f for f in fields if f.managedObjectType in (None, vim.VirtualMachine)), None)
    if field is None:
        field = manager.AddCustomFieldDef(name=action.attribute, moType=vim.VirtualMachine)
    for vm in vms:
        manager.SetField(entity=vm.ref, key=field.key, value=action.value)
        vm.attributes[action.attribute or ""] = action.value or ""


def _wait(vsphere: Vsphere, action: VsphereAction, vms: list[VmInfo], deadline: float) -> None:
    def reached(vm: VmInfo) -> bool:
        if action.state == "toolsRunning":
            return str(vm.ref.guest.toolsRunningStatus) == "guestToolsRunning"
        return str(vm.ref.runtime.powerState) == action.state

    pending = list(vms)
    while pending:
        pending = [vm for vm in pending if not reached(vm)]
        if pending and time.time() > deadline:
            raise HookError(f"{action}: {pending[0].name} not {action.state} after {action.timeout:g} s")
        if pending:
            time.sleep(POLL_S)


_ACTIONS = {
    "power_on": _power,
    "power_off": _power,
    "relocate": _relocate,
    "set_attribute": _set_attribute,
    "wait": _wait,
}


def run_action(vsphere: Vsphere, action: VsphereAction, *, stage: str, condition: str) -> None:
    """Carry out one action (the handler of `vsphere:` hooks); HookError (exit 3) on any failure, naming the
    condition and the VM."""
    deadline = time.time() + action.timeout
    try:
        vsphere.vcenter.retry(_ACTIONS[action.vsphere], vsphere, action, _targets(vsphere, action), deadline)
    except HookError as exc:
        raise HookError(f"{stage} hook of condition {condition!r}: {exc}") from None
    except (vmodl.MethodFault, OSError) as exc:
        raise HookError(f"{stage} hook of condition {condition!r}: {action}: {describe_fault(exc)}") from None
