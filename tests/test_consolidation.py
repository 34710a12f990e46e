"""The modelled consolidation on hand-made numbers with a known answer."""

from __future__ import annotations

import pytest

from controller.consolidation import consolidation, modelled_text, vms
from controller.spec import ProfileSpec, SpecError, parse

PROFILE = ProfileSpec(gbps_per_vm=0.5, cpu_pct_per_vm=3, cpu_budget_pct=80)


def test_a_vm_costs_its_own_cpu_and_its_traffic_at_the_conditions_price() -> None:
    """80 % of the host, 3 % per VM of its own and 0.5 Gbit/s at 10 % per Gbit/s: 80 / (3 + 5) = 10 VMs."""
    assert vms(PROFILE, 10.0) == pytest.approx(10.0)
    metrics = {
        "host.cpu_per_gbps": {
            "by_condition": {
                "direct": {"mean": 10.0, "ci95": [8.0, 12.0]},
                "rules": {"mean": 20.0, "ci95": None},
                "idle": {"mean": None, "ci95": None},
            }
        }
    }
    found = consolidation(PROFILE, metrics)
    assert found["direct"]["vms"] == pytest.approx(10.0)
    assert found["direct"]["ci95"] == pytest.approx([80 / 9, 80 / 7])  # dearer CPU, fewer VMs: the CI flips
    assert found["rules"]["vms"] == pytest.approx(80 / 13) and found["rules"]["ci95"] is None
    assert found["idle"]["vms"] is None and all(f["modelled"] for f in found.values())
    assert modelled_text(found["direct"]) == "≈ 10 VMs [9, 11] (modelled)"
    assert modelled_text(found["idle"]).startswith("–")


def test_a_profile_needs_a_run_that_measures_host_cpu_per_gbps() -> None:
    base = """\
name: p
agents: [{name: a}, {name: b}]
conditions: [{name: direct, baseline: true}]
workloads: [WORKLOAD]
profile: {gbps_per_vm: 0.5}
"""
    assert parse(base.replace("WORKLOAD", "{kind: iperf3, agents: [a], server: b}")).profile is not None
    with pytest.raises(SpecError) as caught:
        parse(base.replace("WORKLOAD", "{kind: cpu, agents: [a]}"))
    assert "profile" in str(caught.value), str(caught.value)
