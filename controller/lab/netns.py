"""`vtax lab`: guest VMs as network namespaces on 198.18.0.0/15, with an appliance namespace between them.

Layout (all names start with `vtax`/`vtx`, so `lab down` finds them even after a crash):

    guest i (netns vtax-g<i>)  eth0 198.18.<1|2>.<10+i>/24 ──▶ bridge br-a|br-b in netns vtax-app
                               mgmt0 198.19.255.<10+i>/24  ──▶ bridge vtx-mgmt (root namespace, 198.19.255.1)

Odd guests sit on subnet A (198.18.1.0/24, zone a), even guests on subnet B (198.18.2.0/24, zone b); the
appliance namespace routes between them and is where rules, delay and rate limits are applied. The
management network carries the broker traffic, so the appliance never delays or drops control messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from controller.errors import InfrastructureError, InputError

STATE_DIR = Path(os.environ.get("VTAX_LAB_DIR", "/run/vtax-lab"))
APPLIANCE = "vtax-app"
MGMT_BRIDGE = "vtx-mgmt"
MGMT_NET = "198.19.255"
SUBNETS = {"a": ("198.18.1", "br-a"), "b": ("198.18.2", "br-b")}
DELAY_QUEUE = 7
MAX_GUESTS = 200


@dataclass(frozen=True, kw_only=True)
class Guest:
    index: int

    @property
    def netns(self) -> str:
        return f"vtax-g{self.index}"

    @property
    def name(self) -> str:
        return f"g{self.index}"

    @property
    def zone(self) -> str:
        return "a" if self.index % 2 else "b"

    @property
    def address(self) -> str:
        return f"{SUBNETS[self.zone][0]}.{10 + self.index}"

    @property
    def mgmt_address(self) -> str:
        return f"{MGMT_NET}.{10 + self.index}"


def _sh(*args: str, netns: str | None = None, check: bool = True, stdin: str | None = None) -> str:
    cmd = (["ip", "netns", "exec", netns] if netns else []) + list(args)
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise InfrastructureError(f"lab: `{' '.join(args)}` failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _require_root() -> None:
    if os.geteuid() != 0:
        raise InputError("vtax lab needs root: it creates network namespaces, veth pairs and nftables rules")
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            raise InputError(f"vtax lab needs the `{tool}` program (Debian/Ubuntu: iproute2, nftables)")


def _state() -> dict[str, Any]:
    try:
        return json.loads((STATE_DIR / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save(state: dict[str, Any]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "state.json").write_text(json.dumps(state, indent=2))


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _sh("ip", "netns", "list").splitlines() if line.startswith("vtax-")]


def _spawn(cmd: list[str], log: Path, netns: str | None = None, env: dict[str, str] | None = None) -> int:
    """Start a process detached from this one (it outlives `vtax lab up`); returns its pid."""
    full = (["ip", "netns", "exec", netns] if netns else []) + cmd
    with log.open("ab") as out:
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    return proc.pid


def up(*, guests: int, appliance: bool, agents: bool, broker_port: int) -> dict[str, Any]:
    """Create the lab; with `agents`, also a redis-server and one agent per guest. Returns what was made."""
    _require_root()
    if not 1 <= guests <= MAX_GUESTS:
        raise InputError(f"--guests: expected 1 to {MAX_GUESTS}, got {guests}")
    if _namespaces():
        raise InputError("a lab is already up (namespaces vtax-*); run `vtax lab down` first")
    state: dict[str, Any] = {"guests": guests, "pids": {}, "created": time.time()}
    _save(state)
    _sh("ip", "netns", "add", APPLIANCE)
    _sh("ip", "link", "set", "lo", "up", netns=APPLIANCE)
    _sh("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward", netns=APPLIANCE)
    for prefix, bridge in SUBNETS.values():
        _sh("ip", "link", "add", bridge, "type", "bridge", netns=APPLIANCE)
        _sh("ip", "addr", "add", f"{prefix}.1/24", "dev", bridge, netns=APPLIANCE)
        _sh("ip", "link", "set", bridge, "up", netns=APPLIANCE)
    _sh("ip", "link", "add", MGMT_BRIDGE, "type", "bridge")
    _sh("ip", "addr", "add", f"{MGMT_NET}.1/24", "dev", MGMT_BRIDGE)
    _sh("ip", "link", "set", MGMT_BRIDGE, "up")
    for i in range(1, guests + 1):
        _add_guest(Guest(index=i))
    if appliance:
        configure_appliance(rules=0, delay_ms=None, rate_mbit=None)
    if agents:
        _start_agents(state, broker_port)
    _save(state)
    return state


def _add_guest(guest: Guest) -> None:
    ns, i = guest.netns, guest.index
    _sh("ip", "netns", "add", ns)
    _sh("ip", "link", "set", "lo", "up", netns=ns)
    _sh("ip", "link", "add", f"vtxg{i}a", "type", "veth", "peer", "name", f"vtxg{i}b")
    _sh("ip", "link", "set", f"vtxg{i}a", "netns", ns, "name", "eth0")
    _sh("ip", "link", "set", f"vtxg{i}b", "netns", APPLIANCE, "name", f"g{i}")
    _sh("ip", "link", "set", f"g{i}", "master", SUBNETS[guest.zone][1], "up", netns=APPLIANCE)
    _sh("ip", "addr", "add", f"{guest.address}/24", "dev", "eth0", netns=ns)
    _sh("ip", "link", "set", "eth0", "up", netns=ns)
    _sh("ip", "route", "add", "default", "via", f"{SUBNETS[guest.zone][0]}.1", netns=ns)
    _sh("ip", "link", "add", f"vtxm{i}a", "type", "veth", "peer", "name", f"vtxm{i}b")
    _sh("ip", "link", "set", f"vtxm{i}a", "netns", ns, "name", "mgmt0")
    _sh("ip", "addr", "add", f"{guest.mgmt_address}/24", "dev", "mgmt0", netns=ns)
    _sh("ip", "link", "set", "mgmt0", "up", netns=ns)
    _sh("ip", "link", "set", f"vtxm{i}b", "master", MGMT_BRIDGE, "up")


def _start_agents(state: dict[str, Any], port: int) -> None:
    """A broker as the secure-deployment guide sets one up (TLS only, an ACL user per side, signed tasks; its
    key material in STATE_DIR/certs) and one agent per guest."""
    from agent.broker import Keys
    from controller import certs
    from controller.distributed import list_agents, wait_for_broker

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise InputError("--agents needs redis-server (Debian/Ubuntu: apt-get install redis-server)")
    material = STATE_DIR / "certs"
    shutil.rmtree(material, ignore_errors=True)  # a lab's, from one that was not taken down
    broker = f"rediss://{MGMT_NET}.1:{port}/0"
    certs.init(material, hosts=[f"{MGMT_NET}.1"], broker_url=broker, port=port)
    state["broker"] = broker
    state["controller_env"] = str(material / "controller" / "broker.env")
    config = material / "redis" / "redis-tls.conf"
    state["pids"]["redis"] = _spawn(redis_command(redis_server, f"{MGMT_NET}.1", port, config), STATE_DIR / "redis.log")
    _save(state)
    settings = certs.side_settings(material / "controller")
    client = wait_for_broker(settings)
    agent_env = certs.read_env(material / "agent" / "broker.env")
    for i in range(1, state["guests"] + 1):
        guest = Guest(index=i)
        state["pids"][guest.name] = _spawn(
            agent_command(broker, guest.name, zone=guest.zone, allow=["198.18.0.0/15"], address=guest.address),
            STATE_DIR / f"{guest.name}.log",
            netns=guest.netns,
            env=agent_env,
        )
        _save(state)
    give_up = time.monotonic() + 60
    while len(list_agents(client, Keys())) < state["guests"]:
        if time.monotonic() > give_up:
            raise InfrastructureError(f"lab agents did not all register within 60 s; see {STATE_DIR}/g*.log")
        time.sleep(0.2)


def redis_command(program: str, bind: str, port: int, config: Path | None = None) -> list[str]:
    """A throwaway broker without persistence; with `config` (`vtax certs init`'s redis-tls.conf), on a TLS port
    with its ACL users, else plain on `port` (tests on loopback)."""
    if config is None:
        return [program, "--bind", bind, "--port", str(port), "--save", "", "--appendonly", "no"]
    return [
        program,
        str(config),
        "--bind",
        bind,
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
    ]


def agent_command(broker: str, name: str, *, zone: str, allow: list[str], address: str) -> list[str]:
    """The command line of one agent, run with this interpreter."""
    cmd = [sys.executable, "-m", "controller", "agent", "--broker", broker, "--name", name, "--zone", zone]
    for cidr in allow:
        cmd += ["--allow", cidr]
    return [*cmd, "--address", address]


def down() -> list[str]:
    """Remove everything the lab made, whether or not `up` finished; safe to run any number of times."""
    _require_root()
    removed = []
    state = _state()
    started = state.get("pids", {})
    inside = [int(pid) for ns in _namespaces() for pid in _sh("ip", "netns", "pids", ns, check=False).split()]
    existed = _kill_all([*started.values(), *inside])
    removed += [f"process {name} ({pid})" for name, pid in started.items() if pid in existed]
    for ns in _namespaces():
        _sh("ip", "netns", "del", ns, check=False)
        removed.append(f"namespace {ns}")
    for line in _sh("ip", "-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith("vtx"):
            _sh("ip", "link", "del", name, check=False)
            removed.append(f"link {name}")
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    return removed


def _kill(pid: int) -> bool:
    """Stop one process (see _kill_all); False when there was no such process."""
    return bool(_kill_all([pid]))


def _kill_all(pids: list[int]) -> set[int]:
    """SIGTERM every process (its group, where it leads one), then wait for all of them at once, at most 3 s,
    and SIGKILL what is left. Returns the pids that existed. (One at a time, 2 guests' agents took 8.7 s.)"""
    existed = {pid for pid in pids if _signal(pid, signal.SIGTERM)}
    alive, give_up = set(existed), time.monotonic() + 3
    while alive and time.monotonic() < give_up:
        alive = {pid for pid in alive if _running(pid)}
        if alive:
            time.sleep(0.05)
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    return existed


def _signal(pid: int, sig: signal.Signals) -> bool:
    """Send `sig` to the process group `pid` leads, else to the process; False when neither exists."""
    for send in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            send(pid, sig)
            return True
    return False


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; only its parent's wait is missing)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _netem_available() -> bool:
    probe = subprocess.run(
        ["ip", "netns", "exec", APPLIANCE, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
        capture_output=True,
        check=False,
    )
    _sh("tc", "qdisc", "del", "dev", "lo", "root", netns=APPLIANCE, check=False)
    return probe.returncode == 0


def configure_appliance(
    *, rules: int | None, delay_ms: float | None, rate_mbit: float | None, cpu: int | None = None
) -> list[str]:
    """Put the appliance into exactly this state (None everywhere: off). Returns what is now applied.

    rules: conntrack on plus that many non-matching nftables rules, all evaluated for every forwarded packet.
    delay_ms: one-way delay from subnet A to subnet B (round trip + delay_ms), by netem where the kernel has
    it, else by a userspace NFQUEUE delayer. rate_mbit: a tbf rate limit in both directions. cpu: the CPU
    that does the appliance's forwarding work (see _steer).
    """
    _require_root()
    if APPLIANCE not in _namespaces():
        raise InputError("no lab is up; run `vtax lab up` first")
    cpus = os.cpu_count() or 1
    if cpu is not None and not 0 <= cpu < cpus:
        raise InputError(f"--cpu: this machine has CPUs 0 to {cpus - 1}, got {cpu}")
    state = _state()
    _clear_appliance(state)
    applied = []
    if cpu is not None:
        _steer(1 << cpu)
        applied.append(f"forwarding on CPU {cpu}")
    if rules is not None:
        lines = [
            "table inet vtax {",
            " chain forward {",
            "  type filter hook forward priority 0; policy accept;",
            "  ct state invalid counter drop",
        ]
        lines += [f"  ip daddr 198.51.100.{n % 254 + 1} tcp dport {1024 + n} counter drop" for n in range(rules)]
        _sh("nft", "-f", "-", netns=APPLIANCE, stdin="\n".join([*lines, " }", "}"]) + "\n")
        applied.append(f"conntrack + {rules} nftables rules")
    if rate_mbit is not None:
        # a short queue (10 ms), as on a real shaper: on veth a queued packet stays charged to the sender's
        # socket, so a 100 ms queue filled a UDP sender's buffer and throttled it (0.49 of 0.8 Gbit/s offered,
        # 0 % loss) where a real network drops the excess and the receiver counts it as loss
        burst = max(32_000, int(rate_mbit * 1e6 / 8 / 100))
        for _, bridge in SUBNETS.values():
            _sh(
                "tc",
                "qdisc",
                "add",
                "dev",
                bridge,
                "root",
                "tbf",
                "rate",
                f"{rate_mbit}mbit",
                "burst",
                str(burst),
                "latency",
                "10ms",
                netns=APPLIANCE,
            )
        applied.append(f"rate limit {rate_mbit:g} Mbit/s")
    if delay_ms is not None and delay_ms > 0:
        applied.append(_apply_delay(state, delay_ms, with_rate=rate_mbit is not None))
    state["appliance"] = applied
    _save(state)
    return applied


def _apply_delay(state: dict[str, Any], delay_ms: float, *, with_rate: bool) -> str:
    bridge_b = SUBNETS["b"][1]
    if not with_rate and _netem_available():
        _sh("tc", "qdisc", "add", "dev", bridge_b, "root", "netem", "delay", f"{delay_ms}ms", netns=APPLIANCE)
        return f"delay {delay_ms:g} ms A→B (netem)"
    if shutil.which("iptables-nft") is None:
        raise InputError("--delay without netem needs iptables-nft (Debian/Ubuntu: apt-get install iptables)")
    _sh(
        "iptables-nft",
        "-A",
        "FORWARD",
        "-i",
        SUBNETS["a"][1],
        "-o",
        bridge_b,
        "-j",
        "NFQUEUE",
        "--queue-num",
        str(DELAY_QUEUE),
        "--queue-bypass",
        netns=APPLIANCE,
    )
    log = STATE_DIR / "delayer.log"
    cmd = [sys.executable, "-m", "controller.lab.delayer", "--queue", str(DELAY_QUEUE), "--delay-ms", str(delay_ms)]
    state["pids"]["delayer"] = _spawn(cmd, log, netns=APPLIANCE)
    give_up = time.monotonic() + 10
    while "READY" not in log.read_text():
        if time.monotonic() > give_up:
            raise InfrastructureError(f"the NFQUEUE delayer did not start; see {log}")
        time.sleep(0.05)
    return f"delay {delay_ms:g} ms A→B (userspace NFQUEUE delayer: this kernel has no netem)"


def _steer(mask: int) -> None:
    """Receive processing of the appliance's guest-facing interfaces on the CPUs in `mask` (RPS; 0: where the
    packet arrived). On veth the appliance has no CPU of its own: forwarding and nftables run in the sender's
    context, on the guests' CPU, unless steered away; then the appliance's cost shows as that CPU's softirq.
    """
    script = f"for queue in /sys/class/net/g*/queues/rx-*/rps_cpus; do echo {mask:x} > $queue; done"
    _sh("sh", "-c", script, netns=APPLIANCE)


def _clear_appliance(state: dict[str, Any]) -> None:
    _steer(0)
    _sh("nft", "delete", "table", "inet", "vtax", netns=APPLIANCE, check=False)
    for _, bridge in SUBNETS.values():
        _sh("tc", "qdisc", "del", "dev", bridge, "root", netns=APPLIANCE, check=False)
    if shutil.which("iptables-nft"):
        _sh("iptables-nft", "-F", "FORWARD", netns=APPLIANCE, check=False)
    pid = state.get("pids", {}).pop("delayer", None)
    if pid:
        _kill(pid)
    (STATE_DIR / "delayer.log").unlink(missing_ok=True)


def status() -> dict[str, Any]:
    """What the lab currently is: its state file and the namespaces that exist."""
    return {**_state(), "namespaces": _namespaces()}
