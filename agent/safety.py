"""What an agent may send load to: its allowlist of networks (default: loopback only).

A target's name is resolved once, here; the tools are given the address that was checked, so a name that
resolves differently a moment later cannot take the load elsewhere.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

import workloads
from workloads.base import LOOPBACK, WorkloadParams

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(Exception):
    """The agent will not do what it was asked, as it is configured: a target outside its allowlist, more load
    tasks than its concurrency. A configuration error, reported as a refusal."""


class Allowlist:
    """Networks an agent may target; a host name is allowed only if every address it resolves to is."""

    def __init__(self, cidrs: list[str] | tuple[str, ...] = LOOPBACK) -> None:
        try:
            self.networks: list[Network] = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        except ValueError as exc:
            raise ValueError(f"--allow: {exc}") from None

    def __str__(self) -> str:
        return ", ".join(str(n) for n in self.networks)

    def allows(self, address: str) -> bool:
        """Whether an IP address (not a name) lies inside the allowlist."""
        ip = ipaddress.ip_address(address.split("%")[0])
        return any(ip in network for network in self.networks)

    def check(self, host: str) -> str:
        """The address to send load to for `host`; Refused unless every address it resolves to lies
        inside the allowlist."""
        try:
            addresses = sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})
        except (socket.gaierror, UnicodeError, ValueError) as exc:
            raise Refused(f"target {host!r} does not resolve: {exc}") from None
        for address in addresses:
            if not self.allows(address):
                raise Refused(
                    f"target {host} ({address}) is outside this agent's allowlist ({self}); "
                    "start the agent with --allow for that network"
                )
        return addresses[0]


@dataclass(frozen=True)
class RateLimits:
    """The most load one task of this agent may ask for (`vtax agent --max-gbps/--max-rps`); a request for more,
    or for unpaced load, is refused before anything starts."""

    max_gbps: float | None = None
    max_rps: float | None = None

    @property
    def unlimited(self) -> bool:
        return self.max_gbps is None and self.max_rps is None

    def check(self, kind: str, params: WorkloadParams) -> None:
        offered = getattr(workloads.get(kind), "offered_load", None)
        if offered is None or self.unlimited:
            return
        load = offered(params)
        for key, limit, flag, unit, pace in (
            ("gbps", self.max_gbps, "--max-gbps", "Gbit/s", "a bitrate"),
            ("rps", self.max_rps, "--max-rps", "requests/s", "rps"),
        ):
            if limit is None or key not in load:
                continue
            asked = load[key]  # type: ignore[literal-required]
            if asked is None:
                raise Refused(
                    f"{kind} load without {pace} is unlimited; this agent sends at most {limit:g} {unit} ({flag})"
                )
            if asked > limit:
                raise Refused(
                    f"{kind} load of {asked:g} {unit} asked; this agent sends at most {limit:g} {unit} ({flag})"
                )


def private_dir(path: Path) -> Path:
    """`path` as a directory only this user can enter: made 0700 where missing; an existing one must be a real
    directory (not a symlink) owned by this user, and loses any group or other access. ValueError otherwise: a
    directory another local user prepared could make this agent write where they choose."""
    for missing in reversed([p for p in (path, *path.parents) if not os.path.lexists(p)]):
        os.mkdir(missing, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{path} is not a directory (a symlink?); refusing to use it")
    if info.st_uid != os.geteuid():
        raise ValueError(f"{path} belongs to uid {info.st_uid}, not this agent's ({os.geteuid()}); refusing to use it")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def own_regular_file(path: Path) -> bool:
    """Whether `path` is a regular file (not a symlink) of this user that nobody else may write."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022
