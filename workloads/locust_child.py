"""The http workload's generator: locust, headless, in a process of its own.

locust patches the standard library for gevent on import; that must never happen inside an agent, so
the agent runs this module as a child (`python -m workloads.locust_child CONFIG_JSON`). Once a second it
prints one JSON line: requests, failures, bytes, a mergeable latency histogram, its own CPU (user +
system, % of one core) and whether
locust warned about CPU. Users start at `start_at`, ramp at `spawn_rate`, and stop after `duration`.

Every connection this process opens is checked against the agent's allowlist first (`_guard_connections`),
whatever the locustfile does: a redirect, a hard-coded URL or a name that resolves elsewhere fails as a
request instead of sending load outside it.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import time
from typing import Any

import gevent
import gevent.socket
import psutil
from locust import FastHttpUser, HttpUser, constant, constant_throughput, task
from locust.env import Environment
from locust.util.load_locustfile import load_locustfile

from workloads import histogram


def _user_class(config: dict[str, Any]) -> list[type]:
    if config["scenario"] == "locustfile":
        users, _shapes = load_locustfile(config["locustfile"])
        return list(users.values())
    base = FastHttpUser if config["user_class"] == "fast" else HttpUser
    path = f"/{config['object_size']}"
    payload = b"x" * config["object_bytes"]
    scenario = config["scenario"]

    pacing = constant_throughput(config["rps"] / config["users"]) if config["rps"] else constant(config["wait_s"])

    class Scenario(base):  # type: ignore[valid-type, misc]
        wait_time = pacing

        @task
        def one(self) -> None:
            if scenario == "get":
                self.client.get(path)
            elif scenario == "connections":
                self.client.get(path, headers={"Connection": "close"})
            else:
                self.client.post("/upload", data=payload)

    return [Scenario]


class OutsideAllowlist(ConnectionRefusedError):
    """A connection this agent may not make."""


def _guard_connections(allow: list[str]) -> None:
    """Patch the (gevent) socket class so that connecting anywhere outside `allow` raises instead; a name is
    resolved here and the checked address is what is connected to."""
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in allow]
    cls = gevent.socket.socket
    connect, connect_ex = cls.connect, cls.connect_ex

    def checked(self: Any, address: Any) -> Any:
        if self.family not in (socket.AF_INET, socket.AF_INET6):
            return address
        host, port, *rest = address
        infos = socket.getaddrinfo(host, port, self.family, socket.SOCK_STREAM)
        ips = [info[4][0] for info in infos]
        for ip in ips:
            if not any(ipaddress.ip_address(ip.split("%")[0]) in network for network in networks):
                raise OutsideAllowlist(f"{host} ({ip}) is outside this agent's allowlist")
        return (ips[0], port, *rest)

    cls.connect = lambda self, address: connect(self, checked(self, address))
    cls.connect_ex = lambda self, address: connect_ex(self, checked(self, address))


def main() -> None:
    config = json.loads(sys.argv[1])
    _guard_connections(config["allow"])
    env = Environment(user_classes=_user_class(config), host=config["host"])
    window: dict[str, Any] = {"requests": 0, "failures": 0, "bytes": 0, "hist": {}}
    cpu_warned = False

    def on_request(response_time: float, response_length: int, exception: Exception | None, **_: Any) -> None:
        window["requests"] += 1
        window["bytes"] += response_length or 0
        if exception is not None:
            window["failures"] += 1
        histogram.record(window["hist"], response_time)

    def on_cpu_warning(**_: Any) -> None:
        nonlocal cpu_warned
        cpu_warned = True

    env.events.request.add_listener(on_request)
    env.events.cpu_warning.add_listener(on_cpu_warning)
    runner = env.create_local_runner()
    gevent.sleep(max(0.0, config["start_at"] - time.time()))
    runner.start(config["users"], spawn_rate=config["spawn_rate"])
    end = config["start_at"] + config["duration"]
    me = psutil.Process()
    t0, cpu0 = time.time(), sum(me.cpu_times()[:2])
    while t0 < end - 0.05:
        gevent.sleep(max(0.0, min(t0 + 1.0, end) - time.time()))
        now, cpu = time.time(), sum(me.cpu_times()[:2])
        cpu_pct = 100.0 * (cpu - cpu0) / max(now - t0, 1e-6)
        line = {"t": t0, "dt": now - t0, **window, "cpu_pct": cpu_pct, "cpu_warning": cpu_warned}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        window.update(requests=0, failures=0, bytes=0, hist={})
        t0, cpu0 = now, cpu
    runner.quit()


if __name__ == "__main__":
    main()
