"""`vtax deploy` against the vCenter simulator: agent VMs cloned from a template, spread evenly, named, marked,
connected and configured through guestinfo; a host in maintenance mode fails only its own clones; destroy
removes exactly vtax's VMs. Agents cannot run inside simulated VMs: one local `vtax agent` process stands in for
the clones' agents, started with the settings read from each clone's guestinfo."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVmomi import vim

from controller.vsphere.connection import Vcenter, VcenterConfig
from controller.vsphere.deploy import GUESTINFO, MARK
from controller.vsphere.inventory import Inventory
from tests.cluster import Agents, RedisServer
from tests.conftest import VTAX, Vtax
from tests.vcsim import VcSim

TEMPLATE = "DC0_C0_RP0_VM0"
PORT_GROUP = "DC0_DVPG0"


@pytest.fixture(scope="module")
def sim() -> Iterator[VcSim]:
    with VcSim(clusters=1, hosts=4, vms=1, refresh=1) as server:
        yield server


def vcenter(sim: VcSim) -> Vcenter:
    return Vcenter(config=VcenterConfig(url=sim.url, user=sim.user, password=sim.password, insecure=True))


def deploy(
    vtax: Vtax, sim: VcSim, *args: str, background: bool = False
) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    command = [VTAX, "deploy", *args, "--vcenter", sim.url, "--vcenter-user", sim.user, "--vcenter-insecure"]
    env = {**vtax.env, "VTAX_VCENTER_PASSWORD": sim.password}
    if background:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def deployed(sim: VcSim, deployment: str = "vtax") -> list:
    with vcenter(sim) as connection:
        inventory = Inventory(vcenter=connection)
        return [
            {
                "name": vm.name,
                "host": inventory.hosts[vm.host].name,
                "power": vm.power,
                "networks": vm.networks,
                "guestinfo": {o.key: o.value for o in vm.ref.config.extraConfig if o.key.startswith(GUESTINFO)},
            }
            for vm in inventory.vms.values()
            if vm.attributes.get(MARK) == deployment
        ]


def test_twenty_agents_over_four_hosts_are_spread_configured_and_registered(
    vtax: Vtax, sim: VcSim, broker: RedisServer, agents: Agents
) -> None:
    began = time.monotonic()
    proc = deploy(
        vtax, sim, "--template", TEMPLATE, "--count", "20", "--cluster", "DC0_C0", "--zone", "web",
        "--network", PORT_GROUP, "--allow", "127.0.0.0/8", "--broker", broker.url, "--wait", "60", background=True,
    )  # fmt: skip
    assert isinstance(proc, subprocess.Popen)
    give_up = time.monotonic() + 60
    while len(made := deployed(sim)) < 20 or any(vm["power"] != "poweredOn" for vm in made):
        assert proc.poll() is None and time.monotonic() < give_up, proc.communicate()
        time.sleep(0.3)
    assert collections.Counter(vm["host"] for vm in made) == {f"DC0_C0_H{i}": 5 for i in range(4)}
    for vm in made:
        host = vm["host"].replace("_", "-")
        assert vm["name"].startswith(f"vtax-web-{host}-") and PORT_GROUP in vm["networks"]
        assert vm["guestinfo"] == {
            f"{GUESTINFO}name": vm["name"],
            f"{GUESTINFO}zone": "web",
            f"{GUESTINFO}broker": broker.url,
            f"{GUESTINFO}allow": "127.0.0.0/8",
        }
    # the clones' agents, as each would start from its guestinfo: one process serves all their names
    names = sorted(vm["guestinfo"][f"{GUESTINFO}name"] for vm in made)
    agents.start(names[0], broker, zone="web", extra_names=names[1:])
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, out + err
    assert "20 of 20 agent VM(s) up and registered" in out
    status = deploy(vtax, sim, "status", "--broker", broker.url, "--json")
    rows = json.loads(status.stdout)
    assert len(rows) == 20 and all(row["agent"] and row["power"] == "poweredOn" for row in rows)
    gone = deploy(vtax, sim, "destroy")
    assert gone.returncode == 0 and "removed 20 VM(s)" in gone.stdout and deployed(sim) == []
    print(f"deployed and destroyed 20 VMs in {time.monotonic() - began:.1f} s")


def test_a_host_in_maintenance_fails_only_its_clones_and_destroy_spares_a_look_alike(vtax: Vtax, sim: VcSim) -> None:
    with vcenter(sim) as connection:
        inventory = Inventory(vcenter=connection)
        host = inventory.host_named("DC0_C0_H3")
        task = host.ref.EnterMaintenanceMode_Task(timeout=0)
        while task.info.state in ("queued", "running"):
            time.sleep(0.05)
        source = inventory.vm_named(TEMPLATE).ref
        spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=host.ref.parent.resourcePool))
        look_alike = source.CloneVM_Task(folder=source.parent, name="vtax-db-DC0-C0-H0-1", spec=spec)
        while look_alike.info.state in ("queued", "running"):
            time.sleep(0.05)
    try:
        done = deploy(vtax, sim, "--template", TEMPLATE, "--count", "8", "--cluster", "DC0_C0", "--zone", "db",
                      "--broker", "redis://127.0.0.1:1/0", "--wait", "0", "--deployment", "partial")  # fmt: skip
        assert done.returncode == 3, done.stdout + done.stderr
        assert done.stderr.count("is in maintenance mode") == 2 and "vtax-db-DC0-C0-H3-1 on DC0_C0_H3" in done.stderr
        assert "6 of 8 agent VM(s) made and powered on" in done.stdout
        made = deployed(sim, "partial")
        assert len(made) == 6 and "vtax-db-DC0-C0-H0-1" not in {vm["name"] for vm in made}  # the name was taken
        gone = deploy(vtax, sim, "destroy", "--deployment", "partial")
        assert "removed 6 VM(s)" in gone.stdout
        with vcenter(sim) as connection:
            assert Inventory(vcenter=connection).vm_named("vtax-db-DC0-C0-H0-1") is not None  # not vtax's: kept
    finally:
        with vcenter(sim) as connection:
            Inventory(vcenter=connection).host_named("DC0_C0_H3").ref.ExitMaintenanceMode_Task(timeout=0)


def test_the_dry_run_prints_the_plan_and_makes_nothing(vtax: Vtax, sim: VcSim) -> None:
    done = deploy(vtax, sim, "--template", TEMPLATE, "--count", "3", "--hosts", "DC0_C0_H[01]", "--zone", "app",
                  "--broker", "redis://127.0.0.1:1/0", "--dry-run")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "vtax-app-DC0-C0-H0-1" in done.stdout and "vtax-app-DC0-C0-H1-1" in done.stdout
    assert "vtax-app-DC0-C0-H0-2" in done.stdout and "3 clone(s) of DC0_C0_RP0_VM0 over 2 host(s)" in done.stdout
    assert deployed(sim) == []
    missing = deploy(vtax, sim, "--template", "no-such", "--broker", "redis://127.0.0.1:1/0")
    assert missing.returncode == 2 and "--template: no VM or template named 'no-such'" in missing.stderr


STAND_IN_VMTOOLSD = """#!{python}
# VMware Tools' vmtoolsd, as far as `vtax agent` uses it: `--cmd "info-get guestinfo.KEY"` prints the value
import json, pathlib, sys
key = sys.argv[2].removeprefix("info-get ")
value = json.loads((pathlib.Path(__file__).parent / "guestinfo.json").read_text()).get(key)
print(value or "No value found")
sys.exit(0 if value else 1)
"""


def test_a_clones_agent_starts_from_its_guestinfo_alone(
    vtax: Vtax, sim: VcSim, broker: RedisServer, agents: Agents, tmp_path: Path
) -> None:
    """The template needs no per-VM edit: `vtax agent` without flags reads name, zone, broker and allowlist from
    guestinfo. (This machine is no VMware guest: a stand-in vmtoolsd answers from the clone's configuration.)"""
    done = deploy(vtax, sim, "--template", TEMPLATE, "--count", "1", "--zone", "db", "--allow", "127.0.0.0/8",
                  "--broker", broker.url, "--wait", "0", "--deployment", "one")  # fmt: skip
    assert done.returncode == 0, done.stderr
    [clone] = deployed(sim, "one")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "guestinfo.json").write_text(json.dumps(clone["guestinfo"]))
    (tools / "vmtoolsd").write_text(STAND_IN_VMTOOLSD.format(python=sys.executable))
    (tools / "vmtoolsd").chmod(0o755)
    env = {**vtax.env, "PATH": f"{tools}:{vtax.env['PATH']}"}
    with (tmp_path / "agent.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "controller", "agent"], stdout=log, stderr=log, env=env,
                                start_new_session=True)  # fmt: skip
    agents.procs[clone["name"]] = proc
    give_up = time.monotonic() + 30
    while clone["name"] not in broker.agents():
        assert proc.poll() is None and time.monotonic() < give_up, (tmp_path / "agent.log").read_text()[-2000:]
        time.sleep(0.2)
    listed = {a["name"]: a for a in json.loads(vtax("agents", "--broker", broker.url, "--json").stdout)}
    assert listed[clone["name"]]["zone"] == "db" and listed[clone["name"]]["allow"] == ["127.0.0.0/8"]
    assert deploy(vtax, sim, "destroy", "--deployment", "one").returncode == 0


def test_the_plan_spreads_round_robin_names_by_the_hosts_first_label_and_skips_taken_names() -> None:
    from controller.vsphere.deploy import plan

    made = plan(["esx-01.lab.example", "esx-02.lab.example"], 5, "dmz_a", taken={"vtax-dmz-a-esx-01-1"})
    assert [(c.name, c.host) for c in made] == [
        ("vtax-dmz-a-esx-01-2", "esx-01.lab.example"),
        ("vtax-dmz-a-esx-02-1", "esx-02.lab.example"),
        ("vtax-dmz-a-esx-01-3", "esx-01.lab.example"),
        ("vtax-dmz-a-esx-02-2", "esx-02.lab.example"),
        ("vtax-dmz-a-esx-01-4", "esx-01.lab.example"),
    ]
