"""vtax-vcsim, the vCenter simulator of the test lab (test support, not part of the package): built from
deploy/vcsim against Debian's govmomi source (GOPATH mode, no network), started on a free loopback port, and
steered through its control API (set a counter's value for an entity, migrate a VM the way DRS does)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from controller.errors import InfrastructureError
from controller.vsphere.connection import Vcenter, VcenterConfig

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "deploy" / "vcsim"
BINARY = ROOT / "build" / "vtax-vcsim"
VCSIM_SCRIPT = Path(__file__).resolve()  # run as a script from hooks: python tests/vcsim.py CONTROL ...
GOPATH = "/usr/share/gocode"  # golang-github-vmware-govmomi-dev and its dependencies


def build(binary: Path = BINARY) -> Path:
    """Compile the simulator unless the binary is newer than its source."""
    source = SOURCE / "main.go"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    go = shutil.which("go")
    if go is None or not Path(GOPATH, "src/github.com/vmware/govmomi/simulator").is_dir():
        raise InfrastructureError(
            "building vtax-vcsim needs Go and govmomi's source: apt-get install golang-go "
            "golang-github-vmware-govmomi-dev (or `make test`)"
        )
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOPATH": GOPATH, "GO111MODULE": "off", "GOFLAGS": "", "GOPROXY": "off"}
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."], cwd=SOURCE, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise InfrastructureError(f"building vtax-vcsim failed: {done.stderr.strip()[-2000:]}")
    return binary


class VcSim:
    """One simulator process; `url` is its SDK endpoint, `control` its test-only control API."""

    def __init__(
        self,
        *,
        clusters: int = 1,
        hosts: int = 3,
        vms: int = 2,
        refresh: int = 20,
        max_query_metrics: int = 256,
        user: str = "user",
        password: str = "pass",
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self.args = [
            f"-cluster={clusters}",
            f"-host={hosts}",
            f"-vm={vms}",
            f"-refresh={refresh}",
            f"-max-query-metrics={max_query_metrics}",
            f"-user={user}",
            f"-password={password}",
        ]
        if tls_cert is not None:
            self.args += [f"-tls-cert={tls_cert}", f"-tls-key={tls_key}"]
        self.user, self.password = user, password
        self.proc: subprocess.Popen[str] | None = None
        self.url = self.control = ""

    def start(self, timeout: float = 120.0) -> VcSim:
        self.proc = subprocess.Popen(
            [str(build()), *self.args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once the inventory exists and the server listens
        if not line:
            self.proc.wait(timeout=timeout)
            raise InfrastructureError(f"vtax-vcsim exited {self.proc.returncode} before listening")
        started = json.loads(line)
        self.url, self.control = started["url"], started["control"]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> VcSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.control}/{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        context = ssl._create_unverified_context()  # the simulator's own loopback control API
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return json.loads(answer.read())

    def set_counter(self, entity: str, counter: str, value: float, *, instance: str = "") -> dict[str, Any]:
        """From now on, `counter` (group.name.rollup) of `entity` (name or moid) reads `value` (raw units)."""
        return self._post("counter", {"entity": entity, "counter": counter, "value": value, "instance": instance})

    def migrate(self, vm: str, host: str, *, delay_s: float = 0.0) -> dict[str, Any]:
        """Move `vm` to `host` after `delay_s`, posting a DrsVmMigratedEvent as DRS would."""
        return self._post("migrate", {"vm": vm, "host": host, "delay_s": delay_s})


def drop_sessions(url: str, user: str, password: str) -> int:
    """End every session but this one's: the clients must log in again. Returns how many were ended."""
    config = VcenterConfig(url=url, user=user, password=password, insecure=True)
    with Vcenter(config=config) as vcenter:
        manager = vcenter.content.sessionManager
        others = [s.key for s in manager.sessionList or [] if s.key != manager.currentSession.key]
        if others:
            manager.TerminateSession(sessionId=others)
        return len(others)


def main(argv: list[str] | None = None) -> None:
    """`python tests/vcsim.py CONTROL_URL [ENTITY:COUNTER[#INSTANCE]=VALUE...] [--migrate VM=HOST@DELAY_S]
    [--drop-sessions]`: steer a running simulator, e.g. from a condition's hooks."""
    parser = argparse.ArgumentParser(prog="python tests/vcsim.py", description=main.__doc__)
    parser.add_argument("control", help="the simulator's control URL (it prints it on start)")
    parser.add_argument(
        "settings", nargs="*", help="ENTITY:COUNTER[#INSTANCE]=VALUE, e.g. DC0_C0_H0:cpu.usage.average#1=9000"
    )
    parser.add_argument(
        "--migrate", action="append", default=[], help="VM=HOST@DELAY_S, e.g. DC0_C0_RP0_VM0=DC0_C0_H1@1.5"
    )
    parser.add_argument(
        "--drop-sessions", action="store_true", help="end every other client's session, as a vCenter restart would"
    )
    parser.add_argument("--login", default="user:pass", help="USER:PASSWORD for --drop-sessions")
    args = parser.parse_args(argv)
    sim = VcSim()
    sim.control = args.control
    for setting in args.settings:
        target, _, value = setting.rpartition("=")
        entity, _, counter = target.partition(":")
        counter, _, instance = counter.partition("#")
        sim.set_counter(entity, counter, float(value), instance=instance)
    if args.drop_sessions:
        drop_sessions(args.control.rsplit("/", 1)[0] + "/sdk", *args.login.split(":", 1))
    for move in args.migrate:
        vm, _, rest = move.partition("=")
        host, _, delay = rest.partition("@")
        sim.migrate(vm, host, delay_s=float(delay or 0))


if __name__ == "__main__":
    if sys.argv[1:] == ["--build"]:  # `make vcsim`
        print("vCenter simulator:", build())
    else:
        main()
