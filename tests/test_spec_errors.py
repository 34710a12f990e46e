"""Every bad spec exits 2 with one line that names the file, the field and the reason."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Vtax

GOOD = """\
name: t
agents: [{name: client}, {name: server}]
conditions:
  - {name: direct, baseline: true}
  - {name: relay, appliance: relay}
workloads:
  - kind: iperf3
    agents: [client]
    server: server
    params: {streams: 1}
repetitions: 2
"""


def _mutate(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


CASES = [
    ("missing field", _mutate("name: t\n", ""), "name", "required field is missing"),
    ("unknown key", _mutate("repetitions: 2", "repetitons: 2"), "repetitons", "did you mean 'repetitions'"),
    ("unknown param", _mutate("{streams: 1}", "{stream: 1}"), "workloads[0].params.stream", "did you mean 'streams'"),
    ("unknown kind", _mutate("kind: iperf3", "kind: iperf"), "workloads[0].kind", "unknown workload kind 'iperf'"),
    ("wrong type", _mutate("repetitions: 2", "repetitions: three"), "repetitions", "valid integer"),
    ("unknown agent", _mutate("agents: [client]", "agents: [clinet]"), "workloads[0].agents[0]", "unknown agent"),
    ("no baseline", _mutate("baseline: true", "baseline: false"), "conditions", "no condition is marked"),
    ("two baselines", _mutate("appliance: relay", "baseline: true"), "conditions[1].baseline", "more than one"),
    ("missing server", _mutate("    server: server\n", ""), "workloads[0].server", "needs a server agent"),
    ("duplicate key", _mutate("repetitions: 2", "repetitions: 2\nrepetitions: 3"), "", "given twice"),
    ("malformed yaml", _mutate("conditions:", "conditions: [oops"), "", "malformed YAML"),
    ("empty file", "", "", "the file is empty"),
    ("bad sla metric", GOOD + "sla: {iperf3.throughput: {min: 1}}\n", "sla.iperf3.throughput", "did you mean"),
    (
        "appliance pattern on a guest",
        _mutate("{name: server}", "{name: server, appliance_processes: qemu}"),
        "agents[1].appliance_processes",
        "set `hypervisor: true`",
    ),
    (
        "bad appliance pattern",
        _mutate("{name: server}", "{name: server, hypervisor: true, appliance_processes: 'qemu('}"),
        "agents[1].appliance_processes",
        "not a regular expression",
    ),
    (
        "relocate without a destination",
        _mutate("appliance: relay", "setup: [{vsphere: relocate, vms: agents}]"),
        "conditions[1].setup[0].vsphere",
        "exactly one of host and cluster",
    ),
    (
        "unknown vSphere action",
        _mutate("appliance: relay", "setup: [{vsphere: reboot, vms: agents}]"),
        "conditions[1].setup[0].vsphere.vsphere",
        "power_on",
    ),
    (
        "bad appliance VM pattern",
        GOOD + "vsphere: {appliances: {name_pattern: 'sva-('}}\n",
        "vsphere.appliances.name_pattern",
        "not a regular expression",
    ),
    ("bad zone source", GOOD + "vsphere: {zones: {from: tag}}\n", "vsphere.zones.from", "attribute"),
    (
        "typo in an SLA rule",
        GOOD + "sla: {iperf3.throughput_gbps: {minimum: 1}}\n",
        "sla.iperf3.throughput_gbps.minimum",
        "did you mean 'min'? expected one of: min, max, max_change_pct",
    ),
    ("SLA on UDP loss of a TCP load", GOOD + "sla: {iperf3.loss_pct: {max: 1}}\n", "sla.iperf3.loss_pct", "UDP only"),
    (
        "SLA on TCP RTT of a UDP load",
        _mutate("{streams: 1}", "{protocol: udp}").replace("appliance: relay", "description: x")
        + "sla: {iperf3.rtt_ms: {max: 1}}\n",
        "sla.iperf3.rtt_ms",
        "TCP only",
    ),
    (
        "SLA on a vCenter metric without vSphere",
        GOOD + "sla: {vm.ready_pct: {max: 5}}\n",
        "sla.vm.ready_pct",
        "vCenter",
    ),
    ("no agents", _mutate("agents: [{name: client}, {name: server}]", "agents: []"), "agents", "or a `deploy` block"),
    (
        "deploy without its allowlist",
        GOOD + "deploy: {template: t, groups: [{count: 2}]}\n",
        "deploy.allow",
        "required field is missing",
    ),
    (
        "deploy allowlist not a network",
        GOOD + "deploy: {template: t, allow: [10.0.0.0/33], groups: [{count: 2}]}\n",
        "deploy.allow[0]",
        "not a network",
    ),
    (
        "SLA on appliance processes no agent watches",
        GOOD + "sla: {appliance.host_cpu_pct: {max: 5}}\n",
        "sla.appliance.host_cpu_pct",
        "appliance_processes",
    ),
]


def _assert_one_line_error(done, source: str, field: str, reason: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert source in lines[0]
    assert f": {field}: " in lines[0] if field else True
    assert reason in lines[0]


@pytest.mark.parametrize(("case", "text", "field", "reason"), CASES, ids=[c[0] for c in CASES])
def test_bad_spec_exits_2_naming_the_field(vtax: Vtax, case: str, text: str, field: str, reason: str) -> None:
    spec = vtax.spec(text)
    done = vtax("validate", str(spec))
    _assert_one_line_error(done, "spec.yaml", field, reason)


def test_missing_file(vtax: Vtax) -> None:
    done = vtax("run", "nowhere.yaml")
    _assert_one_line_error(done, "nowhere.yaml", "", "file not found")


def test_malformed_yaml_names_the_line(vtax: Vtax) -> None:
    done = vtax("validate", str(vtax.spec(_mutate("conditions:", "conditions: [oops"))))
    assert "spec.yaml:4:" in done.stderr


def test_run_refuses_a_bad_spec_before_measuring(vtax: Vtax) -> None:
    done = vtax("run", str(vtax.spec(_mutate("kind: iperf3", "kind: iperf"))))
    _assert_one_line_error(done, "spec.yaml", "workloads[0].kind", "unknown workload kind")
    assert not vtax.store.exists() or "t" not in vtax("runs").stdout


def test_good_spec_validates(vtax: Vtax) -> None:
    done = vtax("validate", str(vtax.spec(GOOD)))
    assert done.returncode == 0, done.stderr
    assert "2 conditions × 2 repetitions = 4 trials" in done.stdout
    assert "--vcenter" not in done.stdout


def test_a_vsphere_spec_is_told_the_wait_for_vcenter(vtax: Vtax) -> None:
    done = vtax("validate", str(vtax.spec(GOOD + "vsphere: {on_migration: keep}\n")))
    assert done.returncode == 0, done.stderr
    assert "with --vcenter, up to 1 min 36 s more" in done.stdout  # 4 trials × (20 s − 1 s cool-down) + the last 20 s


def test_schema_describes_every_kind(vtax: Vtax) -> None:
    done = vtax("schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert {"name", "agents", "conditions", "workloads", "timing", "sla"} <= set(schema["properties"])
    assert {"Iperf3Workload", "CpuWorkload"} <= set(schema["$defs"])


def test_inventory_without_a_vcenter_says_so(vtax: Vtax) -> None:
    done = vtax("inventory", str(vtax.spec(GOOD)))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "vtax: error: --vcenter: a vCenter URL is required (or VTAX_VCENTER_URL, or url in --vcenter-config)"
    ]


def test_an_sla_on_a_vcenter_metric_is_refused_without_a_vcenter(vtax: Vtax) -> None:
    spec = vtax.spec(GOOD + "vsphere: {on_migration: keep}\nsla: {vm.ready_pct: {max: 5}}\n")
    assert vtax("validate", str(spec)).returncode == 0  # it may be run with --vcenter
    done = vtax("run", str(spec))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "vtax: error: sla.vm.ready_pct: only vCenter reports it; run with --vcenter (or VTAX_VCENTER_URL)"
    ]


def test_a_vsphere_hook_without_a_vcenter_is_refused_before_measuring(vtax: Vtax) -> None:
    spec = GOOD.replace("appliance: relay}", "appliance: relay, setup: [{vsphere: power_on, vms: [fw01]}]}")
    done = vtax("run", str(vtax.spec(spec)))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "vtax: error: condition 'relay' setup: vsphere power_on fw01 needs --vcenter (or VTAX_VCENTER_URL)"
    ]
    assert not vtax.store.exists() or "t" not in vtax("runs").stdout
