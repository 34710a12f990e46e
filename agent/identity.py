"""Who an agent is: what it registers with the broker and repeats in every heartbeat."""

from __future__ import annotations

import ipaddress
import os
import platform
import socket
import time
import uuid
from pathlib import Path

import psutil

from agent.wire import AgentIdentity, MachineInfo
from workloads import iperf3

DMI_UUID = Path("/sys/class/dmi/id/product_uuid")


def _vm_uuid() -> str | None:
    """The VM's BIOS UUID, as vSphere's SearchIndex.FindByUuid expects it (readable by root only)."""
    try:
        return DMI_UUID.read_text().strip().lower() or None
    except OSError:
        return None


def swapped_uuid(text: str) -> str | None:
    """The same BIOS UUID with its first three fields byte-swapped (SMBIOS < 2.6 vs newer readings)."""
    try:
        return str(uuid.UUID(bytes=uuid.UUID(text).bytes_le))
    except ValueError:
        return None


def _addresses() -> list[str]:
    found = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                ip = ipaddress.ip_address(addr.address.split("%")[0])
                if not ip.is_loopback and not ip.is_link_local:
                    found.append(str(ip))
    return found


def version() -> str | None:
    """This vtax's version, as the agents report it and the controller compares it: the one installed in this
    interpreter's environment. (A vtax.egg-info that a build left in a checkout is on sys.path too when an agent
    is started there with `python -m`, and would stand in for it with a stale version.)"""
    import importlib.metadata
    import sysconfig

    installed = importlib.metadata.distributions(name="vtax", path=[sysconfig.get_paths()["purelib"]])
    found = next(iter(installed), None)
    return found.version if found is not None else _version("vtax")


def _version(distribution: str) -> str | None:
    import importlib.metadata  # 50 ms: only when a run reports its versions, not at every command's start

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def identity(
    *,
    name: str,
    zone: str | None,
    allow: list[str],
    address: str | None,
    vm_uuid: str | None = None,
    max_tasks: int | None = None,
    signed: bool = False,
) -> AgentIdentity:
    """A JSON-able description of this agent and the machine it runs on; `address` defaults to the first one,
    `vm_uuid` to the BIOS UUID this machine reports."""
    addresses = _addresses()
    return {
        **machine(),
        "address": address or (addresses[0] if addresses else None),
        "name": name,
        "vm_uuid": vm_uuid.lower() if vm_uuid else _vm_uuid(),
        "addresses": addresses,
        "zone": zone,
        "allow": allow,
        "pid": os.getpid(),
        "started": time.time(),
        "max_tasks": max_tasks,
        "signed": signed,
    }


def machine() -> MachineInfo:
    """This machine and the versions of the tools that measure on it."""
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "iperf3": iperf3.version(),
        "locust": _version("locust"),
        "vtax": version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
