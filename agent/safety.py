"""What an agent may send load to: its allowlist of networks (default: loopback only)."""

from __future__ import annotations

import ipaddress
import socket

LOOPBACK = ("127.0.0.0/8", "::1/128")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetRefused(Exception):
    """The agent will not send load to this target."""


class Allowlist:
    """Networks an agent may target; a host name is allowed only if every address it resolves to is."""

    def __init__(self, cidrs: list[str] | tuple[str, ...] = LOOPBACK) -> None:
        try:
            self.networks: list[Network] = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        except ValueError as exc:
            raise ValueError(f"--allow: {exc}") from None

    def __str__(self) -> str:
        return ", ".join(str(n) for n in self.networks)

    def check(self, host: str) -> None:
        """Raise TargetRefused unless `host` lies inside the allowlist."""
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except socket.gaierror as exc:
            raise TargetRefused(f"target {host!r} does not resolve: {exc}") from None
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not any(ip in network for network in self.networks):
                raise TargetRefused(
                    f"target {host} ({ip}) is outside this agent's allowlist ({self}); "
                    "start the agent with --allow for that network"
                )
