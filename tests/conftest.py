"""Shared helpers: run the real `vtax` command and write specs into a temporary directory."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Agents, RedisServer, TimeSeriesServer

VTAX = str(Path(sys.executable).parent / "vtax")


def pytest_configure(config: pytest.Config) -> None:
    if shutil.which("iperf3") is None:
        raise pytest.UsageError("the tests need the iperf3 program: apt-get install iperf3 (or run `make test`)")


class Vtax:
    """Runs `vtax` as a user would, with a run store and specs in one temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.store = workdir / "runs.db"
        self.spool = workdir / "spool"
        self.extra_env: dict[str, str] = {}  # e.g. a side's broker.env, as its shell would have it

    def spec(self, text: str, name: str = "spec.yaml") -> Path:
        path = self.workdir / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    @property
    def env(self) -> dict[str, str]:
        return {
            "VTAX_STORE": str(self.store),
            "VTAX_INFLUX_SPOOL_DIR": str(self.spool),
            "XDG_STATE_HOME": str(self.workdir / "state"),  # where agents keep their tasks (agent.kept)
            "PATH": f"{Path(VTAX).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            **self.extra_env,
        }

    def __call__(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VTAX, *args], cwd=self.workdir, capture_output=True, text=True, timeout=timeout, check=False, env=self.env
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """`vtax` in the background, for tests that interrupt or kill it."""
        return subprocess.Popen(
            [VTAX, *args], cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )

    def run_json(self, spec: Path, *extra: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess[str], Any]:
        out = self.workdir / "result.json"
        done = self(*("run", str(spec), "--json", str(out), *extra), timeout=timeout)
        return done, json.loads(out.read_text()) if out.exists() else None


@pytest.fixture
def vtax(tmp_path: Path) -> Vtax:
    return Vtax(tmp_path)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def influxd(tmp_path: Path) -> Iterator[TimeSeriesServer]:
    """influxd 1.x, for what the Grafana dashboards ask of a run."""
    server = TimeSeriesServer(tmp_path, "influxd").start()
    yield server
    server.stop()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    started = Agents(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and never answers: an iperf3 client to it hangs forever."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for sock in [*held, listener]:
        sock.close()
