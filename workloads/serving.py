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


def listening(port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in psutil.net_connections("tcp")
    )


def start_server(command: Callable[[int], list[str]], *, bind: str, deadline: float, what: str) -> Target:
    """Run `command(port)` on a free port until `deadline`; retry on a port race; WorkloadError if it never listens."""
    lifetime = max(1, int(deadline - time.time()) + 1)
    last_error = ""
    for _attempt in range(3):
        port = free_port(bind)
        proc = subprocess.Popen(
            ["timeout", "-s", "KILL", str(lifetime), *command(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # outlives the agent; `timeout` ends it
        )
        give_up = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < give_up and proc.poll() is None:
            if listening(port):
                return Target(host=bind, port=port)
            time.sleep(0.02)
        proc.kill()
        last_error = (proc.communicate()[1] or b"").decode(errors="replace").strip()
    raise WorkloadError(f"{what} did not start on {bind}: {last_error or 'no listener appeared'}")
