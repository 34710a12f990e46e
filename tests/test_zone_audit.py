"""`vtax audit zones` and a run's zone watch against the vCenter simulator: VMs of two zones on one host are
found, a policy that allows them passes, DRS rules that keep zones apart are read, and a migration mid-trial
that joins zones flags that trial."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVmomi import vim

from controller.spec import VsphereAction, VsphereSpec
from controller.vsphere.actions import run_action
from controller.vsphere.connection import Vcenter, VcenterConfig
from controller.vsphere.session import Vsphere
from tests.cluster import Agents, RedisServer
from tests.conftest import VTAX, Vtax
from tests.vcsim import VCSIM_SCRIPT, VcSim

H0, H1, H2 = "DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2"
VM = [f"DC0_C0_RP0_VM{i}" for i in range(6)]
# where each VM is put, and its zone: H0 joins web and db with no appliance; H1 has web and the appliance
PLACE = {
    VM[0]: (H0, "web"),
    VM[1]: (H0, "db"),
    VM[2]: (H1, "web"),
    VM[3]: (H1, None),
    VM[4]: (H2, "db"),
    VM[5]: (H2, None),
}
POLICY = """\
zones: {from: attribute, attribute: vtax.zone}
appliances: {attribute: vtax.role=appliance}
"""


def session(sim: VcSim) -> Vsphere:
    config = VcenterConfig(url=sim.url, user=sim.user, password=sim.password, insecure=True)
    return Vsphere(vcenter=Vcenter(config=config), spec=VsphereSpec())


def act(session_: Vsphere, **action: object) -> None:
    run_action(session_, VsphereAction.model_validate(action), stage="setup", condition="audit")


@pytest.fixture(scope="module")
def sim() -> Iterator[VcSim]:
    """One cluster of three hosts and six VMs, placed and zoned as PLACE says; VM3 is the appliance on H1."""
    with VcSim(clusters=1, hosts=3, vms=6, refresh=1) as server:
        vsphere = session(server)
        for vm, (host, zone) in PLACE.items():
            act(vsphere, vsphere="relocate", vms=[vm], host=host)
            if zone:
                act(vsphere, vsphere="set_attribute", vms=[vm], attribute="vtax.zone", value=zone)
        act(vsphere, vsphere="set_attribute", vms=[VM[3]], attribute="vtax.role", value="appliance")
        vsphere.vcenter.close()
        yield server


def zones_audit(vtax: Vtax, sim: VcSim | None, *extra: str) -> tuple[int, dict]:
    vcenter = ["--vcenter", sim.url, "--vcenter-user", sim.user, "--vcenter-insecure"] if sim else []
    password = {"VTAX_VCENTER_PASSWORD": sim.password} if sim else {}
    done = subprocess.run(
        [VTAX, "audit", "zones", *vcenter, *extra],
        capture_output=True, text=True, env={**vtax.env, **password}, timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if "--json" in extra else {"text": done.stdout}


def test_vms_of_two_zones_on_one_host_are_found_and_a_policy_can_allow_them(
    vtax: Vtax, sim: VcSim, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    code, found = zones_audit(vtax, sim, "--policy", str(policy), "--days", "0", "--json")
    assert code == 1 and found["zones"] == ["db", "web"] and found["zoned_vms"] == 4
    by_kind = {(f["kind"], f["host"] or f["cluster"]): f for f in found["findings"]}
    assert set(by_kind) == {("co_resident", H0), ("no_appliance", H0), ("drs_may_mix", "DC0_C0")}
    assert by_kind[("co_resident", H0)]["vms"] == {"web": [VM[0]], "db": [VM[1]]}
    assert found["violations"] == 3
    text = zones_audit(vtax, sim, "--policy", str(policy), "--days", "0")[1]["text"]
    assert f"host {H0} runs VMs of zones web (1), db (1)" in text and "3 violation(s)" in text

    policy.write_text(POLICY + "require_appliance: false\nallow:\n  - {zones: [web, db], why: one tier}\n")
    code, found = zones_audit(vtax, sim, "--policy", str(policy), "--days", "0", "--json")
    assert code == 0 and found["violations"] == 0 and all(f["allowed"] for f in found["findings"])

    policy.write_text("allow: [{zones: [web]}]\n")
    code, _ = zones_audit(vtax, sim, "--policy", str(policy))
    assert code == 2


def test_mandatory_vm_host_rules_that_keep_the_zones_apart_are_read(vtax: Vtax, sim: VcSim, tmp_path: Path) -> None:
    vsphere = session(sim)
    inventory = vsphere.inventory
    cluster = next(h.ref.parent for h in inventory.hosts.values())
    vms = {name: inventory.vm_named(name).ref for name in VM}
    hosts = {h.name: h.ref for h in inventory.hosts.values()}

    def group(kind: type, name: str, members: list) -> vim.cluster.GroupSpec:
        field = "vm" if kind is vim.cluster.VmGroup else "host"
        return vim.cluster.GroupSpec(operation="add", info=kind(name=name, **{field: members}))

    def must_run(vms_group: str, hosts_group: str) -> vim.cluster.VmHostRuleInfo:
        return vim.cluster.VmHostRuleInfo(
            name=f"{vms_group}-on-{hosts_group}",
            enabled=True,
            mandatory=True,
            vmGroupName=vms_group,
            affineHostGroupName=hosts_group,
        )

    spec = vim.cluster.ConfigSpecEx(
        drsConfig=vim.cluster.DrsConfigInfo(enabled=True),
        groupSpec=[
            group(vim.cluster.VmGroup, "web-vms", [vms[VM[0]], vms[VM[2]]]),
            group(vim.cluster.VmGroup, "db-vms", [vms[VM[1]], vms[VM[4]]]),
            group(vim.cluster.HostGroup, "front", [hosts[H0], hosts[H1]]),
            group(vim.cluster.HostGroup, "back", [hosts[H2]]),
        ],
        rulesSpec=[
            vim.cluster.RuleSpec(operation="add", info=must_run(vms_group, hosts_group))
            for vms_group, hosts_group in (("web-vms", "front"), ("db-vms", "back"))
        ],
    )
    task = cluster.ReconfigureComputeResource_Task(spec, modify=True)
    while task.info.state in ("queued", "running"):
        time.sleep(0.05)
    try:
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        _, found = zones_audit(vtax, sim, "--policy", str(policy), "--days", "0", "--json")
        assert "drs_may_mix" not in {f["kind"] for f in found["findings"]}  # web on H0/H1, db on H2: apart
    finally:
        undo = vim.cluster.ConfigSpecEx(
            rulesSpec=[vim.cluster.RuleSpec(operation="remove", removeKey=r.key) for r in cluster.configurationEx.rule]
        )
        cluster.ReconfigureComputeResource_Task(undo, modify=True)
        vsphere.vcenter.close()


def test_a_migration_mid_trial_that_joins_zones_flags_that_trial(vtax: Vtax, sim: VcSim) -> None:
    move = f"python {VCSIM_SCRIPT} {sim.control} --migrate {VM[4]}={H1}@2.0"  # db joins web on H1, as DRS would
    spec = vtax.spec(
        f"""
        name: zone-watch
        agents: [{{name: a1, vm: {VM[2]}}}]
        conditions:
          - {{name: base, baseline: true}}
          - name: drs
            setup: "{move}"
            teardown: [{{vsphere: relocate, vms: [{VM[4]}], host: {H2}}}]
        workloads: [{{kind: noop, agents: [a1]}}]
        timing: {{warmup: 0.5, steady: 2, cooldown: 0}}
        repetitions: 1
        vsphere:
          zones: {{from: attribute, attribute: vtax.zone}}
          appliances: {{attribute: vtax.role=appliance}}
          watch_zones: {{}}
        """
    )
    vtax.extra_env = {"VTAX_VCENTER_PASSWORD": sim.password}
    done, result = vtax.run_json(spec, "--vcenter", sim.url, "--vcenter-user", sim.user, "--vcenter-insecure")
    assert result is not None, done.stderr
    mixed = [v for v in result["validity"] if v["code"] == "zones_mixed"]
    conditions = {t["idx"]: t["condition"] for t in result["trials"]}
    assert [conditions[v["trial"]] for v in mixed] == ["drs"], result["validity"]
    assert f"DRS moved {VM[4]} (zone db) from {H2} to {H1}, which then ran zone(s) web" in mixed[0]["message"]
    at_start = result["vsphere"]["zones"]
    assert {(f["kind"], f["host"]) for f in at_start["findings"]} >= {("co_resident", H0), ("no_appliance", H0)}
    page = vtax.workdir / "report.html"
    assert vtax("report", result["run_id"], "-o", str(page)).returncode == 0
    html = page.read_text()
    assert 'id="zones">Security zones' in html and f"host {H0} runs VMs of zones web (1), db (1)" in html


@pytest.fixture
def qemu_guests() -> Iterator[dict[str, str]]:
    """Processes with the command line libvirt gives QEMU (this machine runs no KVM guests): two zone guests and
    an appliance, as a hypervisor agent finds them in /proc. Name → UUID."""
    guests = {"web1": str(uuid.uuid4()), "db1": str(uuid.uuid4()), "sva-1": str(uuid.uuid4())}
    command = (
        'exec -a qemu-system-x86_64 {python} -c "import time; time.sleep(120)" -name guest={name},x=on -uuid {uuid}'
    )
    procs = [
        subprocess.Popen(["bash", "-c", command.format(python=sys.executable, name=name, uuid=value)])
        for name, value in guests.items()
    ]
    yield guests
    for proc in procs:
        proc.kill()
        proc.wait()


def test_kvm_hosts_are_audited_from_the_agents_on_the_hypervisor_and_in_its_guests(
    vtax: Vtax, broker: RedisServer, agents: Agents, qemu_guests: dict[str, str], tmp_path: Path
) -> None:
    """A hypervisor agent registers the guests it runs; guest agents, their BIOS UUID and zone (here all on one
    machine, as in the lab)."""
    agents.start("kvm1", broker)
    for name, zone in (("web1", "web"), ("db1", "db")):
        agents.start(name, broker, zone=zone, env={"VTAX_VM_UUID": qemu_guests[name].upper()})
    policy = tmp_path / "kvm.yaml"
    policy.write_text('appliances: {name_pattern: "^sva-"}\n')
    code, found = zones_audit(vtax, None, "--broker", broker.url, "--policy", str(policy), "--json")
    assert code == 1, found
    [finding] = found["findings"]
    assert finding["kind"] == "co_resident" and finding["vms"] == {"db": ["db1"], "web": ["web1"]}
    assert found["appliance_check"] and found["vms"] == 3  # the appliance guest is on the host: none is wanting
    policy.write_text('appliances: {name_pattern: "^sva-"}\nallow: [{zones: [web, db]}]\n')
    assert zones_audit(vtax, None, "--broker", broker.url, "--policy", str(policy), "--json")[0] == 0
