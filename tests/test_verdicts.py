"""Verdict logic on hand-made data (after Shaker's tests/test_sla.py): a Store filled by hand, then `analyse`.

Every statistic is checked against a value computed here independently, every validity code is made to fire,
and every SLA rule is made to pass and to fail.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats

from agent.wire import AgentResult, HostSample, TrialRecord
from controller.analysis import analyse
from controller.facts import trial_facts
from controller.plan import make_plan
from controller.spec import Experiment, parse
from controller.store import Store
from controller.validity import COARSE_SAMPLES, NOISY_CI_PCT, SATURATED_CPU_PCT

T0 = 1_700_000_000.0
WARMUP, STEADY, COOLDOWN = 1.0, 4.0, 1.0
SPEC = f"""
name: verdicts
agents: [{{name: a}}, {{name: b}}, {{name: hv, hypervisor: true, appliance_processes: "fw01"}}]
conditions: [{{name: base, baseline: true}}, {{name: fw}}]
workloads: [{{kind: iperf3, agents: [a], server: b}}]
timing: {{warmup: {WARMUP}, steady: {STEADY}, cooldown: {COOLDOWN}, max_start_skew_ms: 5}}
repetitions: 3
"""


class Run:
    """A run written into a store by hand, trial by trial, as the run loop would have written it."""

    def __init__(self, tmp_path: Path, spec: str = SPEC, run_id: str = "r1") -> None:
        self.experiment: Experiment = parse(spec)
        self.store = Store(tmp_path / "verdicts.db")
        self.run_id = run_id
        self.store.create_run(
            run_id=run_id, name="verdicts", engine="embedded", spec_path=None, spec=self.experiment.model_dump()
        )
        self.plan = make_plan(self.experiment)

    def start(self, idx: int) -> float:
        return T0 + 100 * idx

    def trial(
        self,
        idx: int,
        gbps: list[float] | float,
        *,
        status: str = "ok",
        cpu: float = 40.0,
        host_dt: float = 1.0,
        skew_s: float = 0.001,
        appliance_processes: int = 1,
        hypervisor_seconds: float | None = None,
        load_until: float | None = None,
    ) -> None:
        """Trial `idx` of the plan with `gbps` per steady second (one value: every second the same); with
        `load_until`, the load stops that many seconds after the start (its last sample cut there)."""
        trial = self.plan[idx]
        start = self.start(idx)
        duration = WARMUP + STEADY + COOLDOWN
        record: TrialRecord = {
            "idx": idx,
            "condition": trial.condition,
            "repetition": trial.repetition,
            "status": status,
            "reason": "" if status == "ok" else "made by hand",
            "start_at": start,
            "deadline": start + duration + 10,
            "ended": start + duration,
        }
        self.store.add_trial(self.run_id, record)
        per_second = gbps if isinstance(gbps, list) else [gbps] * int(STEADY)
        seconds = [2.0] * int(WARMUP) + per_second + [2.0] * int(COOLDOWN)  # warm-up and cool-down must not count
        result: AgentResult = {
            "agent": "a",
            "workload": "iperf3",
            "status": "ok",
            "reason": "",
            "samples": [
                {"t": start + i, "dt": min(1.0, (load_until or duration) - i), "values": {"throughput_gbps": v}}
                for i, v in enumerate(seconds)
                if i < (load_until or duration)
            ],
            "summary": {},
            "started_at": start + skew_s,
            "start_skew_s": skew_s,
        }
        self.store.add_agent_result(self.run_id, idx, result)
        covered = duration if hypervisor_seconds is None else hypervisor_seconds
        host: list[HostSample] = [
            {
                "t": start + t,
                "dt": host_dt,
                "host": "hv1",
                "agent": "hv",
                "values": {"host.cpu_pct": cpu, "appliance.host_cpu_pct": 0.0},
                "appliance": {"pattern": "fw01", "processes": appliance_processes},
            }
            for t in _steps(0.0, covered, host_dt)
        ]
        self.store.add_host_samples(self.run_id, idx, host)

    def result(self) -> dict[str, Any]:
        self.store.add_clocks(self.run_id, {"a": {"offset_s": 0.0, "uncertainty_s": 0.0001, "rtt_s": 0.0002}})
        return analyse(self.store, self.run_id)


def _steps(start: float, end: float, step: float) -> list[float]:
    return [start + i * step for i in range(round((end - start) / step))]


def _codes(result: dict[str, Any]) -> dict[str, str]:
    return {issue["code"]: issue["level"] for issue in result["validity"]}


BASE = [10.0, 10.2, 10.4]  # the baseline's three repetitions (Gbit/s): sd 0.2
FW = [7.8, 8.0, 8.2]


def _clean_run(tmp_path: Path, changes: dict[int, dict[str, Any]] | None = None, **kwargs: Any) -> Run:
    """Three good repetitions per condition, interleaved (base, fw, base, ...); `changes` alters some trials."""
    run = Run(tmp_path, **kwargs)
    for idx, trial in enumerate(run.plan):
        values = BASE if trial.condition == "base" else FW
        made: dict[str, Any] = {"cpu": 40.0 if trial.condition == "base" else 60.0} | (changes or {}).get(idx, {})
        run.trial(idx, made.pop("gbps", values[trial.repetition - 1]), **made)
    return run


def test_statistics_are_what_their_names_say(tmp_path: Path) -> None:
    result = _clean_run(tmp_path).result()
    assert result["passed"] and not result["validity"]
    metric = result["metrics"]["iperf3.throughput_gbps"]
    base = metric["by_condition"]["base"]
    assert base["values"] == BASE and base["n"] == 3 and base["mean"] == pytest.approx(10.2)
    half = scipy_stats.t.ppf(0.975, 2) * 0.2 / math.sqrt(3)
    assert base["ci95"] == pytest.approx([10.2 - half, 10.2 + half])
    over = metric["overhead"]["fw"]
    # interleaved: repetition k of both conditions ran side by side, so the change is paired by repetition: the
    # mean of the three per-repetition log ratios, a t-interval on them (df 2), and the p-value of the same test
    assert over["method"] == "paired" and over["n_pairs"] == 3
    logs = [math.log(f / b) for f, b in zip(FW, BASE, strict=True)]
    centre, sd = sum(logs) / 3, float(np.std(logs, ddof=1))
    assert over["delta"] == pytest.approx(-2.2) and over["pct"] == pytest.approx(100 * (math.exp(centre) - 1))
    low, high = over["ci95_pct"]
    assert low < over["pct"] < high < 0  # a log-ratio interval around the ratio's change, all of it a loss
    half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert [low, high] == pytest.approx([100 * (math.exp(centre + s * half) - 1) for s in (-1, 1)])
    assert over["p_value"] == pytest.approx(scipy_stats.ttest_1samp(logs, 0.0).pvalue)
    assert over["p_adjusted"] == pytest.approx(over["p_value"])  # one comparison: nothing to adjust
    assert over["significant"]
    cpu = result["metrics"]["host.cpu_pct"]
    assert cpu["by_condition"]["fw"]["mean"] == pytest.approx(60.0)
    assert result["metrics"]["host.cpu_per_gbps"]["by_condition"]["base"]["values"] == pytest.approx(
        [40 / 10, 40 / 10.2, 40 / 10.4]
    )


def test_only_the_steady_phase_counts_and_agents_combine_per_second(tmp_path: Path) -> None:
    run = _clean_run(tmp_path)
    result = run.result()
    # warm-up and cool-down seconds were 2 Gbit/s: had they counted, the first trial would not be exactly 10
    assert result["trials"][0]["kpis"]["iperf3.throughput_gbps"] == pytest.approx(10.0)
    run.store.add_agent_result(  # a second client in the same trial: throughput sums per second
        run.run_id,
        0,
        {
            "agent": "b",
            "workload": "iperf3",
            "status": "ok",
            "reason": "",
            "samples": [{"t": run.start(0) + 1 + i, "dt": 1.0, "values": {"throughput_gbps": 5.0}} for i in range(4)],
            "summary": {},
        },
    )
    assert analyse(run.store, run.run_id)["trials"][0]["kpis"]["iperf3.throughput_gbps"] == pytest.approx(15.0)


def test_one_agents_samples_that_share_a_second_are_its_mean_not_a_sum(tmp_path: Path) -> None:
    """A series 0.7 s off the start ends in a partial interval whose middle falls in the same second as the
    interval before it (as locust's windows do): that second is the agent's time-weighted mean (4 Gbit/s), never
    the two added up as if two agents sent them. Found by an http search that reported 1,070 req/s for 800."""
    run = _clean_run(tmp_path)
    start = run.start(0)
    samples = [{"t": start + WARMUP - 0.3 + i, "dt": 1.0, "values": {"throughput_gbps": 4.0}} for i in range(4)]
    samples.append({"t": start + WARMUP + 3.7, "dt": 0.3, "values": {"throughput_gbps": 4.0}})
    run.store.add_agent_result(
        run.run_id,
        0,
        {"agent": "c", "workload": "iperf3", "status": "ok", "reason": "", "samples": samples, "summary": {}},
    )
    # agent a's 10 Gbit/s and agent c's 4 in every steady second
    assert analyse(run.store, run.run_id)["trials"][0]["kpis"]["iperf3.throughput_gbps"] == pytest.approx(14.0)


def test_host_counters_are_weighted_by_their_overlap_with_the_steady_phase(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.trial(0, 10.0, cpu=50.0, host_dt=6.0)  # one 6 s sample covering the whole trial
    start = run.start(0)
    run.store.add_host_samples(  # a second host whose sample covers half the steady phase at 10 %
        run.run_id, 0, [{"t": start + WARMUP, "dt": 2.0, "host": "hv2", "values": {"host.cpu_pct": 10.0}}]
    )
    kpis = analyse(run.store, run.run_id)["trials"][0]["kpis"]
    assert kpis["host.cpu_pct"] == pytest.approx((50.0 + 10.0) / 2)  # hosts combine by mean


@pytest.mark.parametrize(
    ("status", "code"),
    [("error", "trial_error"), ("incomplete", "trial_incomplete"), ("killed", "trial_killed")],
)
def test_a_trial_that_did_not_end_ok_is_an_error_and_left_out(tmp_path: Path, status: str, code: str) -> None:
    run = _clean_run(tmp_path, {0: {"gbps": 1000.0, "status": status}})
    result = run.result()
    assert _codes(result)[code] == "error" and not result["passed"]
    assert 1000.0 not in result["metrics"]["iperf3.throughput_gbps"]["by_condition"]["base"]["values"]


def test_host_saturated(tmp_path: Path) -> None:
    run = _clean_run(tmp_path, {1: {"cpu": SATURATED_CPU_PCT + 5}})
    assert _codes(run.result())["host_saturated"] == "warning"


def test_start_skew(tmp_path: Path) -> None:
    run = _clean_run(tmp_path, {1: {"skew_s": 0.006}})  # limit 5 ms
    result = run.result()
    assert _codes(result)["start_skew"] == "warning" and result["start_skew_ms"]["max"] == pytest.approx(6.0)


def test_steady_incomplete(tmp_path: Path) -> None:
    run = _clean_run(tmp_path, {1: {"gbps": [8.0, 8.0]}})  # 2 s of samples in a 4 s steady phase
    assert _codes(run.result())["steady_incomplete"] == "warning"


def test_host_counters_coarse(tmp_path: Path) -> None:
    run = _clean_run(tmp_path, {1: {"host_dt": STEADY / COARSE_SAMPLES * 1.2}})
    assert _codes(run.result())["host_counters_coarse"] == "warning"


def test_host_counters_incomplete(tmp_path: Path) -> None:
    run = _clean_run(tmp_path, {1: {"hypervisor_seconds": WARMUP + 1}})  # 1 s of the steady phase covered
    assert _codes(run.result())["host_counters_incomplete"] == "warning"


def test_appliance_not_found(tmp_path: Path) -> None:
    run = _clean_run(tmp_path, {idx: {"appliance_processes": 0} for idx in range(6)})
    assert _codes(run.result())["appliance_not_found"] == "warning"


def test_too_few_repetitions(tmp_path: Path) -> None:
    run = _clean_run(tmp_path, {idx: {"status": "error"} for idx in (1, 3)})  # fw: one valid repetition left
    codes = _codes(run.result())
    assert codes["too_few_repetitions"] == "warning"
    run = _clean_run(tmp_path, {idx: {"status": "error"} for idx in (1, 3, 5)}, run_id="r2")  # none left
    assert _codes(run.result())["too_few_repetitions"] == "error"


def test_noisy(tmp_path: Path) -> None:
    run = _clean_run(tmp_path, {1: {"gbps": 5.0}, 3: {"gbps": 10.0}, 5: {"gbps": 15.0}})
    result = run.result()
    fw = result["metrics"]["iperf3.throughput_gbps"]["by_condition"]["fw"]
    assert 100 * (fw["ci95"][1] - fw["mean"]) / fw["mean"] > NOISY_CI_PCT
    assert _codes(result)["noisy"] == "warning"


def test_clock_uncertain(tmp_path: Path) -> None:
    run = _clean_run(tmp_path)
    run.store.add_clocks(run.run_id, {"b": {"offset_s": 0.3, "uncertainty_s": 0.010, "rtt_s": 0.020}})  # ±10 ms
    assert _codes(run.result())["clock_uncertain"] == "warning"


@pytest.mark.parametrize(
    ("kind", "severity"),
    [("vsphere_missing", "warning"), ("vsphere_resolution", "warning"), ("vm_migrated", "error")],
)
def test_trial_flags_become_findings(tmp_path: Path, kind: str, severity: str) -> None:
    run = _clean_run(tmp_path)
    run.store.add_flag(run.run_id, 1, kind=kind, severity=severity, message="made by hand")
    assert _codes(run.result())[kind] == severity


def test_trial_excluded_when_an_agent_received_its_start_too_late(tmp_path: Path) -> None:
    run = _clean_run(tmp_path)
    run.store.add_flag(run.run_id, 1, kind="start_received_late", severity="error", message="1 agent(s) late")
    result = run.result()
    assert _codes(result)["trial_excluded"] == "error" and not result["passed"]
    assert result["metrics"]["iperf3.throughput_gbps"]["by_condition"]["fw"]["values"] == FW[1:]


def test_trial_excluded_when_a_vm_moved_unless_the_spec_keeps_it(tmp_path: Path) -> None:
    run = _clean_run(tmp_path)
    run.store.add_flag(run.run_id, 1, kind="vm_migrated", severity="error", message="moved")
    result = run.result()
    assert _codes(result)["trial_excluded"] == "error"
    assert result["metrics"]["iperf3.throughput_gbps"]["by_condition"]["fw"]["values"] == FW[1:]
    kept = _clean_run(tmp_path, spec=SPEC + "vsphere: {on_migration: keep}\n", run_id="r2")
    kept.store.add_flag(kept.run_id, 1, kind="vm_migrated", severity="error", message="moved")
    result = kept.result()
    assert "trial_excluded" not in _codes(result)
    assert result["metrics"]["iperf3.throughput_gbps"]["by_condition"]["fw"]["values"] == FW


HTTP_SPEC = """
name: http-verdicts
agents: [{name: a}, {name: b}]
conditions: [{name: base, baseline: true}]
workloads: [{kind: http, agents: [a], server: b}]
timing: {warmup: 1, steady: 4, cooldown: 1}
repetitions: 2
"""


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ([{"rps": 1000.0, "failures_per_s": 1.0}] * 4, "http_failures"),
        ([{"rps": r} for r in (1000.0, 1000.0, 1000.0, 1200.0)], "http_rate_unsteady"),
        ([{"rps": 1000.0, "generator_cpu_pct": 99.0}] * 4, "generator_saturated"),
        ([{"rps": 1000.0, "target_cpu_pct": 99.0}] * 4, "target_saturated"),
    ],
)
def test_http_findings(tmp_path: Path, values: list[dict[str, float]], code: str) -> None:
    run = Run(tmp_path, spec=HTTP_SPEC)
    for idx in range(2):
        start = run.start(idx)
        run.store.add_trial(
            run.run_id,
            {
                "idx": idx,
                "condition": "base",
                "repetition": idx + 1,
                "status": "ok",
                "reason": "",
                "start_at": start,
                "deadline": start + 20,
                "ended": start + 6,
            },
        )
        samples = [{"t": start + 1 + i, "dt": 1.0, "values": v} for i, v in enumerate(values)]
        result: AgentResult = {
            "agent": "a",
            "workload": "http",
            "status": "ok",
            "reason": "",
            "samples": samples,  # type: ignore[typeddict-item]
            "summary": {},
        }
        run.store.add_agent_result(run.run_id, idx, result)
    assert _codes(analyse(run.store, run.run_id))[code] == "warning"


@pytest.mark.parametrize(
    ("rule", "passes"),
    [
        ({"min": 7.0}, True),
        ({"min": 9.0}, False),  # fw's mean is 8
        ({"max": 12.0}, True),
        ({"max": 10.0}, False),  # base's mean is 10.2
        ({"max_change_pct": 30.0}, True),  # fw is −21.6 %
        ({"max_change_pct": 20.0}, False),
    ],
)
def test_sla_rules(tmp_path: Path, rule: dict[str, float], passes: bool) -> None:
    key, limit = next(iter(rule.items()))
    spec = SPEC + f"sla: {{iperf3.throughput_gbps: {{{key}: {limit}}}}}\n"
    result = _clean_run(tmp_path, spec=spec).result()
    assert all(check["ok"] for check in result["sla"]) is passes
    assert result["passed"] is passes
    assert {check["rule"] for check in result["sla"]} == {key}


def test_an_sla_on_a_metric_never_measured_fails(tmp_path: Path) -> None:
    spec = SPEC + "sla: {iperf3.rtt_ms: {max: 1}}\n"  # these hand-made samples carry throughput only
    result = _clean_run(tmp_path, spec=spec).result()
    assert result["sla"] == [
        {"metric": "iperf3.rtt_ms", "condition": None, "rule": "present", "limit": None, "value": None, "ok": False}
    ]
    assert not result["passed"]


def test_steady_incomplete_when_the_load_stops_before_the_steady_phase_ends(tmp_path: Path) -> None:
    """The load stops 0.5 s before the steady end: 3.5 of 4 s (88 %) would have passed an 80 % rule, yet half a
    second ran without load. Any uncovered stretch beyond timer jitter is reported."""
    run = _clean_run(tmp_path, {1: {"load_until": WARMUP + STEADY - 0.5}})
    [found] = [i for i in run.result()["validity"] if i["code"] == "steady_incomplete"]
    assert "3.50 s of a 4 s steady phase" in found["message"]


def test_version_mismatch(tmp_path: Path) -> None:
    run = _clean_run(tmp_path)
    run.store.put_note(
        run.run_id,
        "environment",
        {"controller": {"vtax": "1.2.0"}, "agents": {"a": {"vtax": "1.2.0"}, "b": {"vtax": "1.1.0"}}},
    )
    result = run.result()
    [found] = [i for i in result["validity"] if i["code"] == "version_mismatch"]
    assert "agent b runs vtax 1.1.0, the controller 1.2.0" in found["message"] and found["level"] == "warning"
    assert result["vtax_version"] == "1.2.0"


@pytest.mark.parametrize(("skew_ms", "flagged"), [(6.0, False), (8.0, True)])
def test_a_start_skew_counts_only_beyond_what_the_clock_can_tell(tmp_path: Path, skew_ms: float, flagged: bool) -> None:
    """Agent a's clock is known to ± 2 ms: 6 ms off (limit 5) may be 4 ms off, 8 ms is off in any case."""
    run = _clean_run(tmp_path, {1: {"skew_s": skew_ms / 1000}})
    run.store.add_clocks(run.run_id, {"a": {"offset_s": 0.0, "uncertainty_s": 0.002, "rtt_s": 0.004}})
    result = analyse(run.store, run.run_id)
    assert ("start_skew" in _codes(result)) is flagged
    assert result["start_skew_ms"]["uncertainty"] == pytest.approx(2.0)
    if flagged:
        [found] = [i for i in result["validity"] if i["code"] == "start_skew"]
        assert "+8.0 ms (± 2.0 ms)" in found["message"]


def test_stored_facts_give_the_result_the_samples_give(tmp_path: Path) -> None:
    """The run loop stores each trial's facts as it ends, and the analysis then reads no sample: on a run with
    findings of every kind that samples and host counters cause, the result from the facts alone (the samples
    deleted) is the one the samples give."""
    changes = {
        0: {"cpu": 95.0},
        1: {"load_until": WARMUP + STEADY - 1},
        2: {"host_dt": 5.0},
        3: {"hypervisor_seconds": 2.0},
        4: {"skew_s": 0.05},
    }
    run = _clean_run(tmp_path, {i: {"appliance_processes": 0} | changes.get(i, {}) for i in range(6)})
    from_samples = run.result()
    found = {"host_saturated", "steady_incomplete", "host_counters_coarse", "host_counters_incomplete", "start_skew"}
    assert found | {"appliance_not_found"} <= set(_codes(from_samples))
    for trial in run.store.trials(run.run_id):
        idx, start = trial["idx"], trial["start_at"]
        assert start is not None
        facts = trial_facts(
            run.experiment, start, run.store.samples(run.run_id, idx), run.store.host_samples(run.run_id, idx)
        )
        run.store.put_facts(run.run_id, idx, facts)
    db = sqlite3.connect(run.store.path)
    with db:
        db.execute("DELETE FROM sample_blocks")
        db.execute("DELETE FROM host_counters")
    assert run.store.samples(run.run_id) == []
    assert run.result() == from_samples
