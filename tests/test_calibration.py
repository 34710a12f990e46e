"""`vtax calibrate`'s spec and reading, on hand-made specs and results (the real run is in test_lab.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.calibration import calibrate, calibrated_bed, calibration_experiment, calibration_text
from controller.errors import InputError
from controller.search import bed_issues
from controller.spec import parse
from controller.store import Store

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
    tiled = parse(
        SPEC.replace("params: {PARAMS}}", "}, {kind: cpu, name: vm, agents: [c]}").replace("repetitions: 4", "")
        + "tiles: {workloads: [vm], criteria: {vm.achieved_ratio: {min: 0.9}}}\n"
    )
    calibrated = calibration_experiment(tiled, 2, None)
    assert calibrated.tiles is None and [w.label for w in calibrated.workloads] == ["iperf3"]


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


def test_a_search_near_what_the_bed_carries_says_the_bed_may_be_the_limit(tmp_path: Path) -> None:
    """The newest completed calibration of the spec in the store gives the bed's capacity; a capacity of 90 %
    of it or more is flagged, one below is not, and a spec never calibrated gets no such warning."""
    experiment = parse(SPEC.replace("PARAMS", ""))
    store = Store(tmp_path / "runs.db")
    assert calibrated_bed(store, experiment) is None
    calibration = calibration_experiment(experiment, 2, None)
    for run_id, gbps, status in (("old", 5.0, "completed"), ("new", 10.0, "completed"), ("bad", 1.0, "failed")):
        store.create_run(
            run_id=run_id, name=calibration.name, engine="embedded", spec_path=None, spec=calibration.model_dump()
        )
        for idx, condition in enumerate(["bed", "bed-again", "bed", "bed-again"]):
            start = 1000.0 * idx
            store.add_trial(
                run_id,
                {
                    "idx": idx,
                    "condition": condition,
                    "repetition": idx // 2 + 1,
                    "status": "ok",
                    "reason": "",
                    "start_at": start,
                    "deadline": start + 20,
                    "ended": start + 10,
                },
            )
            store.add_agent_result(
                run_id,
                idx,
                {
                    "agent": "c",
                    "workload": "iperf3",
                    "status": "ok",
                    "reason": "",
                    "summary": {},
                    "samples": [
                        {"t": start + t, "dt": 1.0, "values": {"throughput_gbps": gbps + idx}} for t in range(12)
                    ],
                },
            )
        store.finish_run(run_id, status, "")
    bed = calibrated_bed(store, experiment)
    assert bed == {"run_id": "new", "metric": "iperf3.throughput_gbps", "mean": 11.0}  # bed trials: 10 and 12
    found = {
        name: {"value": value, "unit": "Gbit/s"} for name, value in (("direct", 10.0), ("vendor", 9.8), ("slow", 4.0))
    }
    warned = bed_issues(found, bed["mean"], bed["run_id"])  # type: ignore[arg-type]
    assert [w["code"] for w in warned] == ["bed_limit"] and "condition direct: capacity 10 Gbit/s is 91 %" in warned[0][
        "message"
    ]
