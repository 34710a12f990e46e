"""Topologies expand to the flows a user expects; selectors that select nobody are clear errors."""

from __future__ import annotations

import pytest

from controller.errors import InputError
from controller.spec import parse
from controller.topology import AgentInfo, expand

AGENTS = {
    name: AgentInfo(name=name, address="127.0.0.1", zone=zone, labels={"rack": rack})
    for name, zone, rack in [("w1", "web", "r1"), ("w2", "web", "r2"), ("d1", "db", "r1"), ("d2", "db", "r2")]
}


def _flows(workload: str) -> list[tuple[str, str | None]]:
    spec = parse(f"""\
name: t
agents: [{{name: w1}}, {{name: w2}}, {{name: d1}}, {{name: d2}}]
conditions: [{{name: a, baseline: true}}]
workloads:
  - {workload}
""")
    return [(f.client, f.server) for f in expand(spec, AGENTS)]


def test_many_to_one_with_a_zone_selector() -> None:
    assert _flows("{kind: iperf3, agents: ['zone:web'], server: d1}") == [("w1", "d1"), ("w2", "d1")]


def test_pairs() -> None:
    flows = _flows("{kind: iperf3, topology: pairs, pairs: [{client: w1, server: d2}, {client: w2, server: d1}]}")
    assert flows == [("w1", "d2"), ("w2", "d1")]


def test_mesh_is_every_ordered_pair() -> None:
    flows = _flows("{kind: iperf3, topology: mesh, agents: [w1, w2, d1]}")
    assert sorted(flows) == sorted([(a, b) for a in ("w1", "w2", "d1") for b in ("w1", "w2", "d1") if a != b])


def test_zone_crossing_pairs_clients_round_robin() -> None:
    assert _flows("{kind: iperf3, topology: zone-crossing, from_zone: web, to_zone: db}") == [
        ("w1", "d1"),
        ("w2", "d2"),
    ]


def test_label_selector_and_no_server_kinds() -> None:
    assert _flows("{kind: cpu, agents: ['label:rack=r2']}") == [("w2", None), ("d2", None)]


def test_selectors_skip_hypervisor_agents_and_a_name_selects_one() -> None:
    spec = parse("""\
name: t
agents: [{name: w1}, {name: kvm1, hypervisor: true}]
conditions: [{name: a, baseline: true}]
workloads:
  - {kind: cpu, agents: ['zone:web', 'label:rack=r1']}
  - {kind: cpu, name: on-host, agents: [kvm1]}
""")
    agents = {
        "w1": AGENTS["w1"],
        "kvm1": AgentInfo(name="kvm1", address="127.0.0.1", zone="web", labels={"rack": "r1"}, hypervisor=True),
    }
    assert [(f.workload.label, f.client) for f in expand(spec, agents)] == [("cpu", "w1"), ("on-host", "kvm1")]


def test_a_selector_that_selects_nobody_names_the_field() -> None:
    with pytest.raises(InputError, match=r"workloads\[0\].agents\[0\]: 'zone:dmz' selects no agent \(zones: db, web\)"):
        _flows("{kind: iperf3, agents: ['zone:dmz'], server: d1}")


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        ("{kind: iperf3, topology: pairs, agents: [w1]}", "workloads[0].agents: not used by the pairs topology"),
        ("{kind: iperf3, topology: mesh, agents: [w1]}", "workloads[0].agents: a mesh needs at least two agents"),
        ("{kind: cpu, topology: mesh, agents: [w1, w2]}", "workloads[0].topology: mesh needs a kind with a server"),
        ("{kind: iperf3, topology: zone-crossing, from_zone: web}", "workloads[0].to_zone: required"),
    ],
)
def test_topology_fields_are_checked(workload: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _flows(workload)
