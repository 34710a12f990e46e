"""Starting a workload's server side: a free port, a detached process under coreutils `timeout` (its
dead-man switch: it dies at the trial deadline even if its agent is gone), and waiting until it listens.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

import psutil

from workloads.base import Target, WorkloadError

START_TIMEOUT_S = 5.0


def free_port(bind: str) -> int:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((bind, 0))
        return int(sock.getsockname()[1])


def listening() -> set[int]:
    """The TCP ports something listens on now (one scan of the connection table, however many are waited for)."""
    return {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr}


def _free_ports(bind: str, count: int) -> int:
    """The first of `count` consecutive ports that are free now (a race with another binder is retried)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    for _attempt in range(20):
        base = free_port(bind)
        if base + count - 1 > 65535:
            continue
        try:
            for port in range(base + 1, base + count):
                with socket.socket(family, socket.SOCK_STREAM) as sock:
                    sock.bind((bind, port))
        except OSError:
            continue
        return base
    raise WorkloadError(f"no {count} consecutive free ports on {bind}")


def start_server(
    command: Callable[[int], list[str]], *, bind: str, deadline: float, what: str, count: int = 1
) -> Target:
    """Run `command(port)` on `count` consecutive free ports until `deadline` (the target names the first);
    retry on a port race; WorkloadError if one never listens."""
    lifetime = max(1, int(deadline - time.time()) + 1)
    last_error = ""
    for _attempt in range(3):
        base = _free_ports(bind, count)
        procs = {
            base + i: subprocess.Popen(
                ["timeout", "-s", "KILL", str(lifetime), *command(base + i)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # outlives the agent; `timeout` ends it
            )
            for i in range(count)
        }
        waiting = set(procs)
        give_up = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < give_up and all(proc.poll() is None for proc in procs.values()):
            waiting -= listening()
            if not waiting:
                return Target(host=bind, port=base)
            time.sleep(0.02)
        for proc in procs.values():
            proc.kill()
        last_error = "; ".join(
            text for proc in procs.values() if (text := (proc.communicate()[1] or b"").decode(errors="replace").strip())
        )
    raise WorkloadError(f"{what} did not start on {bind}: {last_error or 'no listener appeared'}")
