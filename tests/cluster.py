"""Real brokers and agents for the distributed tests: redis-server on a free port, `vtax agent` processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import redis

from controller.lab.netns import agent_command, redis_command


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


ADMIN_PASSWORD = "test-admin-secret"


class RedisServer:
    """A redis-server this test owns; it can be stopped and started again on the same port.

    With `secure`, it is set up as docs/how-to/secure-deployment.md says, from what `vtax certs init` made in
    `workdir/certs` (TLS only, client certificates, the ACL users, key prefix `prefix`), plus an admin user the
    test inspects it with.
    """

    def __init__(self, workdir: Path, host: str = "127.0.0.1", *, secure: bool = False, prefix: str = "") -> None:
        program = shutil.which("redis-server")
        if program is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server, or `make test`)")
        self.host, self.port, self.prefix = host, free_port(host), prefix
        self.certs = workdir / "certs" if secure else None
        config = None
        if self.certs is not None:
            from controller import certs

            certs.init(
                self.certs, hosts=[host], broker_url=f"rediss://{host}:{self.port}/0", port=self.port, prefix=prefix
            )
            with (self.certs / "redis" / "users.acl").open("a") as acl:
                acl.write(f"user admin on >{ADMIN_PASSWORD} ~* &* +@all\n")
            config = self.certs / "redis" / "redis-tls.conf"
        self.url = f"{'rediss' if secure else 'redis'}://{host}:{self.port}/0"
        self._cmd = redis_command(program, host, self.port, config)
        self._log = workdir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self, side: str) -> dict[str, str]:
        """A side's environment file, as its service reads it."""
        from controller import certs

        assert self.certs is not None
        return certs.read_env(self.certs / side / "broker.env")

    def client(self) -> redis.Redis:
        """An admin client: it sees every key and the ACL log."""
        if self.certs is None:
            return redis.Redis.from_url(self.url)
        side = self.certs / "controller"
        return redis.Redis.from_url(
            self.url, username="admin", password=ADMIN_PASSWORD, ssl_ca_certs=str(side / "ca.crt"),
            ssl_certfile=str(side / "vtax.crt"), ssl_keyfile=str(side / "vtax.key"),
        )  # fmt: skip

    def start(self) -> RedisServer:
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(self._cmd, stdout=log, stderr=log)
        client = self.client()
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
        client = self.client()
        return sorted(json.loads(client.get(k))["name"] for k in client.scan_iter(f"{self.prefix}vtax:agent:*"))


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
        env: dict[str, str] | None = None,
        extra_names: list[str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start one agent process (serving `name` and `extra_names`) and wait until `name` has registered."""
        cmd = agent_command(broker.url, name, zone=zone, allow=allow or ["127.0.0.0/8"], address=address)
        for extra in extra_names or []:
            cmd += ["--name", extra]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        with self.log(name).open("ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=log, start_new_session=True, env={**os.environ, **(env or {})}
            )
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


class TimeSeriesServer:
    """victoria-metrics or influxd (1.x) on a free loopback port, with its data in the test's directory."""

    def __init__(self, workdir: Path, kind: str) -> None:
        self.kind, self.port = kind, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = workdir / f"{kind}-data"
        self.data.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        if kind == "influxd":
            (self.data / "influxd.conf").write_text(
                f'reporting-disabled = true\nbind-address = "127.0.0.1:{free_port()}"\n'
                f'[meta]\n  dir = "{self.data}/meta"\n'
                f'[data]\n  dir = "{self.data}/data"\n  wal-dir = "{self.data}/wal"\n'
                f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            )

    def start(self) -> TimeSeriesServer:
        program = shutil.which("victoria-metrics" if self.kind == "victoria-metrics" else "influxd")
        if program is None:
            pytest.fail(f"{self.kind} is not installed (apt-get install victoria-metrics influxdb, or `make test`)")
        if self.kind == "victoria-metrics":
            cmd = [program, f"-storageDataPath={self.data}", f"-httpListenAddr=127.0.0.1:{self.port}"]
        else:
            cmd = [program, "-config", str(self.data / "influxd.conf")]
        with (self.data.parent / f"{self.kind}.log").open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        give_up = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/ping", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.1)
        if self.kind == "influxd":
            self.influxql("CREATE DATABASE vtax")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def influxql(self, query: str) -> dict:
        data = urllib.parse.urlencode({"q": query, "db": "vtax", "epoch": "u"}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10) as reply:
            return json.load(reply)

    def export(self, name: str, wait: float = 5.0) -> list[dict]:
        """victoria-metrics: every series of a metric, after a forced flush; new series take a moment to be
        searchable, so an empty answer is asked again for up to `wait` seconds."""
        data = urllib.parse.urlencode({"match[]": f'{{__name__="{name}"}}'}).encode()
        give_up = time.monotonic() + wait
        while True:
            urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()
            with urllib.request.urlopen(f"{self.url}/api/v1/export", data=data, timeout=10) as reply:
                series = [json.loads(line) for line in reply.read().splitlines() if line.strip()]
            if series or time.monotonic() > give_up:
                return series
            time.sleep(0.5)
