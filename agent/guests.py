"""The guest VMs a Linux/KVM hypervisor runs, read from its QEMU processes' command lines.

An agent on a hypervisor registers them (`guests` in its heartbeat), so the zone audit can put each guest
agent on its host without libvirt or vCenter: a guest's BIOS UUID, which its agent reports, is the `-uuid`
its QEMU process was started with. Every process's command line is readable by any user (unless /proc is
mounted with hidepid), so the agent needs no privilege for it.
"""

from __future__ import annotations

import os
import re
import threading
import time

import psutil

from agent.wire import GuestVm

QEMU = re.compile(r"^(qemu-system-[\w-]+|qemu-kvm|kvm)$")
MAX_AGE_S = 10.0  # VMs start, stop and migrate: read again after this long (one agent process may beat for many)

_lock = threading.Lock()
_read: tuple[float, list[GuestVm]] = (float("-inf"), [])


def local_guests() -> list[GuestVm]:
    """Every QEMU guest running on this machine, as read at most MAX_AGE_S ago."""
    global _read
    with _lock:
        if time.monotonic() - _read[0] >= MAX_AGE_S:
            _read = (time.monotonic(), _scan())
        return _read[1]


def _scan() -> list[GuestVm]:
    """Every QEMU process's guest, by UUID and name (libvirt's `-name guest=NAME,…`, or a bare `-name NAME`)."""
    found: list[GuestVm] = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if not cmdline or not QEMU.match(os.path.basename(cmdline[0])):
            continue
        uuid = _option(cmdline, "-uuid")
        if uuid is None:
            continue
        name = (_option(cmdline, "-name") or "").split(",")[0].removeprefix("guest=")
        found.append({"uuid": uuid.lower(), "name": name or uuid.lower()})
    return sorted(found, key=lambda guest: guest["name"])


def _option(cmdline: list[str], flag: str) -> str | None:
    for i, word in enumerate(cmdline[:-1]):
        if word == flag:
            return cmdline[i + 1]
    return None
