"""`vtax deploy` against the vCenter simulator: agent VMs cloned from a template, spread evenly, named, marked,
connected and configured through guestinfo; a host in maintenance mode fails only its own clones; destroy
removes exactly vtax's VMs. Agents cannot run inside simulated VMs: one local `vtax agent` process stands in for
the clones' agents, started with the settings read from each clone's guestinfo."""

from __future__ import annotations

import base64
import collections
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
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


def test_a_clone_given_cloud_init_user_data_starts_its_agent_from_the_file_it_writes(
    vtax: Vtax, sim: VcSim, broker: RedisServer, agents: Agents, tmp_path: Path
) -> None:
    """With --cloud-init the settings travel as cloud-init's VMware-datasource user data: its write_files puts the
    agent's instance file in place. (No cloud-init runs here: the test writes the file as write_files would.)"""
    done = deploy(vtax, sim, "--template", TEMPLATE, "--count", "1", "--zone", "app", "--allow", "127.0.0.0/8",
                  "--broker", broker.url, "--wait", "0", "--deployment", "ci", "--cloud-init")  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        with vcenter(sim) as connection:
            [vm] = [v for v in Inventory(vcenter=connection).vms.values() if v.attributes.get(MARK) == "ci"]
            extra = {o.key: o.value for o in vm.ref.config.extraConfig if o.key.startswith("guestinfo.")}
        assert not any(key.startswith(GUESTINFO) for key in extra)
        assert extra["guestinfo.userdata.encoding"] == extra["guestinfo.metadata.encoding"] == "base64"
        assert yaml.safe_load(base64.b64decode(extra["guestinfo.metadata"])) == {
            "instance-id": vm.name, "local-hostname": vm.name
        }  # fmt: skip
        userdata = base64.b64decode(extra["guestinfo.userdata"]).decode()
        assert userdata.startswith("#cloud-config\n")
        [written] = yaml.safe_load(userdata)["write_files"]
        assert written["path"] == "/etc/vtax/instance.yaml"
        instance = tmp_path / "instance.yaml"
        instance.write_text(written["content"])
        env = {**vtax.env, "VTAX_INSTANCE_FILE": str(instance)}
        with (tmp_path / "agent.log").open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "controller", "agent"], stdout=log, stderr=log, env=env,
                                    start_new_session=True)  # fmt: skip
        agents.procs[vm.name] = proc
        give_up = time.monotonic() + 30
        while vm.name not in broker.agents():
            assert proc.poll() is None and time.monotonic() < give_up, (tmp_path / "agent.log").read_text()[-2000:]
            time.sleep(0.2)
        listed = {a["name"]: a for a in json.loads(vtax("agents", "--broker", broker.url, "--json").stdout)}
        assert listed[vm.name]["zone"] == "app" and listed[vm.name]["allow"] == ["127.0.0.0/8"]
        instance.write_text("name: [a, b]\n")
        bad = subprocess.run([sys.executable, "-m", "controller", "agent"], capture_output=True, text=True, env=env,
                             timeout=60, check=False)  # fmt: skip
        assert bad.returncode == 2 and bad.stderr.strip() == f"vtax: error: {instance}: name: expected text, got list"
    finally:
        deploy(vtax, sim, "destroy", "--deployment", "ci")


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


RUN_SPEC = """\
name: fleet-run
deploy:
  template: DC0_C0_RP0_VM0
  NAME
  allow: [127.0.0.0/8]
  wait: 60
  groups:
    - {count: 2, zone: web, hosts: DC0_C0_H0, labels: {role: client}}
    - {count: 1, zone: db, cluster: DC0_C0, hosts: DC0_C0_H1}
conditions: [{name: base, baseline: true, setup: "touch trial-started"}]
workloads: [{kind: noop, agents: ["label:role=client", SERVER]}]
timing: {warmup: 0, steady: STEADY, cooldown: 0, lead: 0.3}
repetitions: 2
"""


def run_spec(vtax: Vtax, *, steady: float, name: str | None, server: str = "vtax-db-DC0-C0-H1-1") -> Path:
    text = RUN_SPEC.replace("STEADY", f"{steady:g}").replace("SERVER", server)
    return vtax.spec(text.replace("NAME", f"name: {name}" if name else ""))


def marked(sim: VcSim) -> dict[str, str]:
    """Every VM that carries the deployment attribute, with its value."""
    with vcenter(sim) as connection:
        return {
            vm.name: vm.attributes[MARK] for vm in Inventory(vcenter=connection).vms.values() if MARK in vm.attributes
        }


def start_run(vtax: Vtax, sim: VcSim, spec: Path, broker: RedisServer, *extra: str) -> subprocess.Popen[str]:
    env = {**vtax.env, "VTAX_VCENTER_PASSWORD": sim.password}
    command = [VTAX, "run", str(spec), "--broker", broker.url, "--vcenter", sim.url, "--vcenter-user", sim.user,
               "--vcenter-insecure", *extra]  # fmt: skip
    return subprocess.Popen(
        command, cwd=vtax.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def stand_in_for_clones(
    sim: VcSim, proc: subprocess.Popen[str], agents: Agents, broker: RedisServer, count: int
) -> None:
    """Once the run's clones are powered on, start the agents they would run: one process per zone, with the names
    and zones their guestinfo gives."""
    give_up = time.monotonic() + 60
    while True:
        made = [vm for vm in deployed_anywhere(sim) if vm["power"] == "poweredOn"]
        if len(made) == count:
            break
        assert proc.poll() is None and time.monotonic() < give_up, proc.communicate()
        time.sleep(0.3)
    zones: dict[str, list[str]] = collections.defaultdict(list)
    for vm in made:
        zones[vm["guestinfo"][f"{GUESTINFO}zone"]].append(vm["guestinfo"][f"{GUESTINFO}name"])
        assert vm["guestinfo"][f"{GUESTINFO}broker"] == broker.url
    for zone, names in zones.items():
        agents.start(names[0], broker, zone=zone, extra_names=names[1:])


def deployed_anywhere(sim: VcSim) -> list:
    return [vm for deployment in set(marked(sim).values()) for vm in deployed(sim, deployment)]


def test_a_run_with_a_deploy_block_makes_its_agents_runs_on_them_and_leaves_nothing_behind(
    vtax: Vtax, sim: VcSim, broker: RedisServer, agents: Agents
) -> None:
    out_json = vtax.workdir / "result.json"
    proc = start_run(vtax, sim, run_spec(vtax, steady=0.5, name="run-fleet"), broker, "--json", str(out_json))
    stand_in_for_clones(sim, proc, agents, broker, 3)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "deployment 'run-fleet': 3 agent VM(s) of DC0_C0_RP0_VM0 over 2 host(s)" in out
    assert "deployment 'run-fleet': removed 3 agent VM(s)" in out
    assert marked(sim) == {}
    result = json.loads(out_json.read_text())
    agents_run = {a["name"]: (a["zone"], a["labels"]) for a in result["spec"]["agents"]}  # the stored spec has them
    assert agents_run == {
        "vtax-web-DC0-C0-H0-1": (
            "web",
            {"role": "client", "deployment": "run-fleet", "host": "DC0_C0_H0", "group": "0"},
        ),
        "vtax-web-DC0-C0-H0-2": (
            "web",
            {"role": "client", "deployment": "run-fleet", "host": "DC0_C0_H0", "group": "0"},
        ),
        "vtax-db-DC0-C0-H1-1": ("db", {"deployment": "run-fleet", "host": "DC0_C0_H1", "group": "1"}),
    }
    assert result["passed"] and {t["status"] for t in result["trials"]} == {"ok"}
    stored = json.loads(vtax("runs", "--json").stdout)[0]
    assert stored["status"] == "completed"


def test_ctrl_c_in_a_run_with_a_deploy_block_removes_its_agent_vms(
    vtax: Vtax, sim: VcSim, broker: RedisServer, agents: Agents
) -> None:
    proc = start_run(vtax, sim, run_spec(vtax, steady=30, name=None), broker)
    stand_in_for_clones(sim, proc, agents, broker, 3)
    deployment = set(marked(sim).values())
    assert len(deployment) == 1 and next(iter(deployment)).startswith("fleet-run-")  # a name of its own per run
    give_up = time.monotonic() + 30
    while not (vtax.workdir / "trial-started").exists():
        assert proc.poll() is None and time.monotonic() < give_up, proc.communicate()
        time.sleep(0.2)
    time.sleep(1)  # the load is running
    proc.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - stopped < 15, out + err  # not the trial's 30 s: nothing waits out its planned end
    assert proc.returncode == 130, out + err
    assert "removed 3 agent VM(s)" in out and marked(sim) == {}


def test_a_deploy_block_is_checked_against_its_plan_before_anything_is_made(
    vtax: Vtax, sim: VcSim, broker: RedisServer
) -> None:
    wrong = start_run(vtax, sim, run_spec(vtax, steady=1, name="checked", server="vtax-db-DC0-C0-H2-1"), broker)
    out, err = wrong.communicate(timeout=60)
    assert wrong.returncode == 2, out + err
    assert "workloads[0].agents[1]: unknown agent 'vtax-db-DC0-C0-H2-1'" in err and "vtax-db-DC0-C0-H1-1" in err
    nowhere = run_spec(vtax, steady=1, name="checked").read_text().replace("hosts: DC0_C0_H1", "hosts: esx-*")
    proc = start_run(vtax, sim, vtax.spec(nowhere), broker)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "deploy.groups[1].hosts: matches no host in vCenter" in err, out + err
    assert marked(sim) == {}
    without = vtax("run", str(run_spec(vtax, steady=1, name="checked")), "--broker", broker.url)
    assert without.returncode == 2 and "deploy: cloning the run's agent VMs needs --vcenter" in without.stderr


def test_an_agent_that_does_not_register_is_named_with_what_vcenter_shows(
    vtax: Vtax, sim: VcSim, broker: RedisServer
) -> None:
    done = deploy(vtax, sim, "--template", TEMPLATE, "--count", "1", "--zone", "quiet", "--broker", broker.url,
                  "--wait", "2", "--deployment", "quiet")  # fmt: skip
    try:
        assert done.returncode == 3, done.stdout + done.stderr
        line = next(line for line in done.stderr.splitlines() if "did not register within 2 s" in line)
        # the simulator's clones run no VMware Tools
        assert line == (
            "vtax: vtax-quiet-DC0-C0-H0-1: its agent did not register within 2 s: VMware Tools do not run in it: "
            "has the guest booted? (the VM's console)"
        )
    finally:
        deploy(vtax, sim, "destroy", "--deployment", "quiet")


def test_a_silent_vm_is_explained_by_the_first_thing_vcenter_shows_wrong() -> None:
    from types import SimpleNamespace as Obj

    from controller.vsphere.deploy import _silence

    def vm(
        question: str | None = None, power: str = "poweredOn", tools: str = "guestToolsRunning", ip: str = ""
    ) -> Obj:
        asked = Obj(text=question) if question else None
        return Obj(
            runtime=Obj(question=asked, powerState=power), guest=Obj(toolsRunningStatus=tools, ipAddress=ip or None)
        )

    assert _silence(vm("msg.uuid.altered: moved or copied?")) == (
        "its console waits for an answer: 'msg.uuid.altered: moved or copied?'"
    )
    assert _silence(vm(power="poweredOff")) == "its VM is poweredOff"
    assert _silence(vm(tools="guestToolsNotRunning")).startswith("VMware Tools do not run in it")
    assert _silence(vm()) == "the guest has no IP address: does DHCP answer on its port group?"
    assert _silence(vm(ip="10.0.0.7")).startswith("the guest runs, at 10.0.0.7: see `journalctl -u vtax-agent`")


def test_a_deploy_spec_names_agents_its_plan_makes_and_is_checked_again_with_them() -> None:
    from controller.errors import SpecError
    from controller.spec import AgentSpec, parse, with_agents

    text = RUN_SPEC.replace("NAME", "").replace("STEADY", "1").replace("SERVER", "vtax-db-esx-9-1")
    experiment = parse(text, "fleet.yaml")  # the name is the plan's to make: not yet an error
    assert experiment.agents == [] and experiment.mentions_vsphere
    grown = with_agents(experiment, [AgentSpec(name="vtax-db-esx-9-1", zone="db")], "fleet.yaml")
    assert [a.name for a in grown.agents] == ["vtax-db-esx-9-1"]
    with pytest.raises(SpecError, match=r"fleet.yaml: workloads\[0\].agents\[1\]: unknown agent 'vtax-db-esx-9-1'"):
        with_agents(experiment, [AgentSpec(name="vtax-db-esx-1-1", zone="db")], "fleet.yaml")
