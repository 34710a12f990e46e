"""`vtax calibrate`'s spec and reading, on hand-made specs and results (the real run is in test_lab.py)."""

from __future__ import annotations

import pytest

from controller.calibration import calibrate, calibration_experiment, calibration_text
from controller.errors import InputError
from controller.spec import parse

SPEC = """\
name: bed
agents: [{name: c}, {name: s}]
conditions:
  - {name: direct, baseline: true, setup: "echo on"}
  - {name: vendor, setup: "echo vendor"}
workloads: [{kind: iperf3, agents: [c], server: s, params: {PARAMS}}]
sla: {iperf3.throughput_gbps: {max_change_pct: 5}}
repetitions: 4
"""


def test_the_baseline_becomes_an_a_a_pair_and_the_cap_a_third_condition() -> None:
    experiment = calibration_experiment(parse(SPEC.replace("PARAMS", "")), 3, 300)
    names = [c.name for c in experiment.conditions]
    assert names == ["bed", "bed-again", "injected"] and experiment.baseline.name == "bed"
    assert [h for c in experiment.conditions[:2] for h in c.setup] == ["echo on", "echo on"]
    assert experiment.conditions[2].setup == ["vtax lab appliance --rate 300"]
    assert experiment.repetitions == 3 and experiment.sla == {} and experiment.order == "interleaved"


def test_what_calibration_cannot_know_is_refused() -> None:
    with pytest.raises(InputError, match="iperf3 TCP first workload"):
        calibration_experiment(parse(SPEC.replace("PARAMS", "protocol: udp, window: 4M")), 2, 300)
    cpu = SPEC.replace("{kind: iperf3, agents: [c], server: s, params: {PARAMS}}", "{kind: cpu, agents: [c]}")
    with pytest.raises(InputError, match="iperf3 or http first workload"):
        calibration_experiment(parse(cpu.replace("sla: {iperf3.throughput_gbps: {max_change_pct: 5}}\n", "")), 2, None)


def test_the_reading_states_the_floor_and_the_injected_error() -> None:
    experiment = calibration_experiment(parse(SPEC.replace("PARAMS", "")), 2, 300)
    described = {"mean": 0.3, "sd": 0.0, "ci95": [0.29, 0.31], "n": 2, "values": [0.3, 0.3]}
    aa = {"delta": 0.1, "pct": 1.0, "ci95_pct": [-4.0, 6.0], "p_value": 0.5, "significant": False, "mde_pct": 7.5}
    result = {
        "metrics": {
            "iperf3.throughput_gbps": {
                "unit": "Gbit/s",
                "by_condition": {"bed": {**described, "mean": 10.0}, "injected": described},
                "overhead": {"bed-again": aa},
            }
        }
    }
    found = calibrate(result, experiment, 300)
    assert found["resolves_pct"] == 7.5 and found["injected"] is not None
    assert found["injected"]["error_pct"] == pytest.approx(100 * (0.3 / (0.3 * 1448 / 1514) - 1))
    text = calibration_text(found)
    assert text[1] == "resolves ±7.5 % with 2 repetitions (A/A +1.0 % [-4.0, +6.0])"
    assert text[2].startswith("injected 300 Mbit/s measured 300.0 Mbit/s (+4.6 %")
    found["aa"]["significant"] = True
    assert "the bed is not stable" in calibration_text(found)[1]
