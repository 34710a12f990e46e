"""Real brokers and agents for the distributed tests: redis-server on a free port, `vtax agent` processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from controller.lab import agent_command, redis_command


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server this test owns; it can be stopped and started again on the same port."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        program = shutil.which("redis-server")
        if program is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server, or `make test`)")
        self.host, self.port = host, free_port(host)
        self.url = f"redis://{host}:{self.port}/0"
        self._cmd = redis_command(program, host, self.port)
        self._log = workdir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(self._cmd, stdout=log, stderr=log)
        client = redis.Redis.from_url(self.url)
        give_up = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def agents(self) -> list[str]:
        client = redis.Redis.from_url(self.url)
        return sorted(json.loads(client.get(k))["name"] for k in client.scan_iter("vtax:agent:*"))


class Agents:
    """`vtax agent` processes, each with its own log; all are killed at the end of the test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        name: str,
        broker: RedisServer,
        *,
        zone: str = "z",
        allow: list[str] | None = None,
        address: str = "127.0.0.1",
        netns: str | None = None,
    ) -> subprocess.Popen[bytes]:
        cmd = agent_command(broker.url, name, zone=zone, allow=allow or ["127.0.0.0/8"], address=address)
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        with self.log(name).open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        self.procs[name] = proc
        give_up = time.monotonic() + 30
        while name not in broker.agents():
            if proc.poll() is not None or time.monotonic() > give_up:
                pytest.fail(f"agent {name} did not register:\n{self.log(name).read_text()[-2000:]}")
            time.sleep(0.1)
        return proc

    def log(self, name: str) -> Path:
        return self.workdir / f"agent-{name}.log"

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)
