"""The capacity search's verdict logic on hand-made devices with known capacities (as Shaker tests its SLA
logic on hand-made data): bisection to the precision, the bounds, refutation by a final trial, the generator
guard, the criteria, and the replay from stored trials that `vtax show` relies on."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from controller.search import (
    MAIN,
    Bounds,
    Bracket,
    GoalSearch,
    Judge,
    capacities,
    expected_trials,
    judge,
    judges,
    per_stream_bitrate,
)
from controller.spec import Criterion, SearchSpec, SpecError, parse

SPEC = SearchSpec(workload="udp", low=0.1, high=40, precision_pct=1, criteria={"udp.loss_pct": Criterion(max=0.5)})


def _search(device: Callable[[float], tuple[bool, float]], spec: SearchSpec = SPEC) -> Bracket:
    """Run a search against `device`: offered load → (passed, carried)."""
    bracket = Bracket.of(spec)
    while (step := bracket.next_step()) is not None:
        load, final = step
        passed, carried = device(load)
        bracket.record(load, final, passed, carried)
    return bracket


@pytest.mark.parametrize("capacity", [0.37, 4.75, 17.2, 39.0])
def test_bisection_finds_a_sharp_capacity_within_the_precision(capacity: float) -> None:
    found = _search(lambda load: (load <= capacity, load))
    assert found.stop == "found" and found.passed is not None and found.failed is not None
    assert found.passed <= capacity < found.failed and found.failed / found.passed - 1 <= 0.01
    assert found.finals == [True, True, True]
    assert found.tried <= expected_trials(Bounds.of(SPEC)) + 1


def test_the_bounds_are_reported_as_bounds_not_as_a_capacity() -> None:
    above = _search(lambda load: (True, load))
    assert above.stop == "above_high" and above.passed == 40 and above.tried == 1 + 3  # high, then its finals
    below = _search(lambda load: (False, load))
    assert below.stop == "below_low" and below.passed is None and below.tried == 2  # high, low


def test_a_final_trial_that_fails_refutes_its_load_and_the_search_goes_on_below() -> None:
    """A device that passes 5 Gbit/s once but not twice: the confirmed capacity ends up below 5."""
    seen: dict[float, int] = {}

    def flaky(load: float) -> tuple[bool, float]:
        seen[load] = seen.get(load, 0) + 1
        return (load <= 4.0 or (load <= 5.0 and seen[load] == 1)), load

    found = _search(flaky, SPEC.model_copy(update={"max_trials": 100}))
    assert found.stop == "found" and found.passed is not None and found.passed <= 4.0
    assert found.failed is not None and 4.0 < found.failed <= 5.0


def test_a_generator_that_cannot_send_the_offered_load_stops_the_search() -> None:
    """The device would pass anything but the sender carries at most 9 Gbit/s: generator_limited at 9, not a
    device capacity (NFVbench's rule)."""
    found = _search(lambda load: (True, min(load, 9.0)))
    assert found.stop == "generator_limited" and found.reached == 9.0 and found.tried == 1


def test_a_noisy_device_is_found_near_its_capacity_and_never_above_a_refuting_final() -> None:
    rng = random.Random(3)
    for _ in range(50):
        found = _search(lambda load: (load <= 10.0 * (1 + rng.uniform(-0.02, 0.02)), load))
        assert found.stop in ("found", "max_trials")
        if found.stop == "found":
            assert found.passed is not None and 9.7 < found.passed < 10.3


def test_the_criteria_judge_a_trial_and_name_what_broke() -> None:
    criteria = {"udp.loss_pct": Criterion(max=0.5), "udp.throughput_gbps": Criterion(min=1)}
    assert judge(criteria, "ok", {"udp.loss_pct": 0.1, "udp.throughput_gbps": 2}) == (True, [])
    passed, broken = judge(criteria, "ok", {"udp.loss_pct": 3.0})
    assert passed is False and broken == ["udp.loss_pct 3 (max 0.5)", "udp.throughput_gbps not measured"]
    assert judge(criteria, "error", {})[0] is None  # a trial that did not run is not judged


def test_a_trial_that_did_not_run_stops_that_search_rather_than_counting_as_a_device_failure() -> None:
    bracket = Bracket.of(SPEC)
    bracket.record(40, False, None, None)
    assert bracket.stop == "trial_failed" and bracket.next_step() is None


def test_the_stored_trials_replay_to_the_same_result() -> None:
    """What `vtax show` computes from the store: each condition's capacity, the load carried at it, and the
    overhead against the baseline's (a device half as fast costs about −50 %)."""
    trials, steps = [], {}
    live: dict[str, Bracket] = {}
    for name, capacity in (("direct", 8.0), ("rules", 4.0)):
        live[name] = _search(lambda load, c=capacity: (load <= c, load))
    index = 0
    for name, capacity in (("direct", 8.0), ("rules", 4.0)):
        bracket = Bracket.of(SPEC)
        while (step := bracket.next_step()) is not None:
            load, final = step
            carried = load * (1 - 0.001 * (index % 3))  # a little noise for the CI
            loss = 0.0 if load <= capacity else 2.0
            trials.append(
                {"idx": index, "status": "ok", "kpis": {"udp.loss_pct": loss, "udp.throughput_gbps": carried}}
            )
            steps[str(index)] = {"condition": name, "load": load, "final": final}
            bracket.record(load, final, loss <= 0.5, carried)
            index += 1
    found = capacities(SPEC, "udp", "direct", trials, steps)
    assert found["direct"]["value"] == live["direct"].passed and found["rules"]["value"] == live["rules"].passed
    assert found["direct"]["stop"] == "found" and found["direct"]["finals_passed"] == 3
    assert found["rules"]["achieved"]["n"] == 3 and found["direct"]["overhead"] is None
    over = found["rules"]["overhead"]
    assert over is not None and -51 < over["pct"] < -49 and over["ci95_pct"][0] < over["pct"] < over["ci95_pct"][1]
    assert [t["passed"] for t in found["rules"]["tried"]][:2] == [False, True]  # 40 fails, 0.1 passes


def test_iperf3_is_asked_for_its_share_of_the_load_per_stream() -> None:
    assert per_stream_bitrate(4.0, flows=2, streams=4) == "500000000"


def test_a_search_spec_is_checked_against_its_workloads() -> None:
    base = """\
name: s
agents: [{name: a}, {name: b}]
conditions: [{name: direct, baseline: true}]
workloads: [{kind: iperf3, name: udp, agents: [a], server: b, params: {protocol: udp}}, {kind: cpu, agents: [a]}]
"""
    good = base + "search: {workload: udp, low: 0.1, high: 10, criteria: {udp.loss_pct: {max: 0}}}\n"
    assert parse(good).search is not None
    for extra, where, says in (
        (
            "search: {workload: tcp, low: 0.1, high: 10, criteria: {udp.loss_pct: {max: 0}}}",
            "search.workload",
            "no workload named",
        ),
        (
            "search: {workload: cpu, low: 0.1, high: 10, criteria: {udp.loss_pct: {max: 0}}}",
            "search.workload",
            "iperf3",
        ),
        ("search: {workload: udp, low: 10, high: 1, criteria: {udp.loss_pct: {max: 0}}}", "search", "below high"),
        (
            "search: {workload: udp, low: 1, high: 10, criteria: {udp.los_pct: {max: 0}}}",
            "search.criteria",
            "did you mean",
        ),
        ("search: {workload: udp, low: 1, high: 10, criteria: {udp.loss_pct: {}}}", "search.criteria", "min, max"),
        (
            "search: {workload: udp, low: 1, high: 10, criteria: {udp.loss_pct: {max: 0}}}\nrepetitions: 5",
            "repetitions",
            "final_repetitions",
        ),
        (
            "search: {workload: udp, low: 1, high: 10, criteria: {udp.loss_pct: {max: 0}}}\n"
            "tiles: {workloads: [udp], criteria: {udp.loss_pct: {max: 0}}}",
            "search.workload",
            "part of a tile",
        ),
    ):
        with pytest.raises(SpecError) as caught:
            parse(base + extra + "\n")
        assert where in str(caught.value) and says in str(caught.value), str(caught.value)


def test_tcp_that_carries_less_than_it_offers_fails_where_udp_means_the_generator() -> None:
    """TCP backs off when the path is full: a shortfall is the path's limit. UDP does not: a shortfall
    without loss is the sender's, and the search must say generator_limited, not report a capacity, unless
    the generator already sent that much in an earlier trial: then the path held it back."""
    kpis = {"udp.loss_pct": 0.0, "udp.throughput_gbps": 0.49}
    assert Judge(SPEC, "tcp")("ok", kpis, 0.8) == (False, ["carried 0.49 of 0.8 Gbit/s offered"], 0.49)
    udp = Judge(SPEC, "udp")
    assert udp("ok", kpis, 0.8) == (True, [], 0.49)
    assert udp("failed", {"udp.throughput_gbps": 0.9}, 0.9)[0] is None and udp.shown == 0.49
    assert udp("ok", {"udp.loss_pct": 3.0, "udp.throughput_gbps": 0.8}, 0.8)[0] is False and udp.shown == 0.8
    passed, broken, _ = udp("ok", {"udp.loss_pct": 0.1, "udp.throughput_gbps": 0.51}, 0.566)
    assert passed is False and "the generator sent 0.8 in an earlier trial" in broken[0], broken
    # a sender that sent 1.3 through the plain path sends 0.35 beside 1,000 rules in a shared kernel: the
    # device took its CPU, the generator's own limit lies higher
    rules = Judge(SPEC, "udp", shown=1.3)
    passed, broken, _ = rules("ok", {"udp.loss_pct": 0.0, "udp.throughput_gbps": 0.35}, 10)
    assert passed is False and "the generator sent 1.3 in an earlier trial" in broken[0], broken
    assert Judge(SPEC, "udp", shown=1.3)("ok", {"udp.loss_pct": 0.0, "udp.throughput_gbps": 1.26}, 10)[0] is True
    bracket = Bracket.of(SPEC)
    bracket.record(0.8, False, True, 0.49)
    assert bracket.stop == "generator_limited" and bracket.reached == 0.49


def test_ndr_and_pdr_are_found_in_one_search_that_shares_its_trials() -> None:
    """A path that loses nothing up to 3 Gbit/s, 0.3 % up to 4 and 2 % above: the partial-drop rate (≤ 0.5 %)
    is 4 and the no-drop rate 3, both within the precision, from one search. The no-drop goal starts from the
    loads the first goal tried, so it costs fewer trials than a search of its own; the replay agrees."""
    spec = SPEC.model_copy(update={"goals": {"ndr": {"udp.loss_pct": Criterion(max=0)}}})
    search, judged = GoalSearch.of(spec), judges(spec, "udp")
    trials, steps = [], {}
    while (step := search.next_step()) is not None:
        load, final = step
        loss = 0.0 if load <= 3 else 0.3 if load <= 4 else 2.0
        kpis = {"udp.loss_pct": loss, "udp.throughput_gbps": load}
        index = len(trials)
        trials.append({"idx": index, "status": "ok", "kpis": kpis})
        steps[str(index)] = {"condition": "direct", "load": load, "final": final, "goal": search.current}
        verdicts = {goal: judge("ok", kpis, load) for goal, judge in judged.items()}
        search.record(load, final, verdicts)
    pdr, ndr = search.brackets[MAIN], search.brackets["ndr"]
    assert pdr.stop == ndr.stop == "found"
    assert pdr.passed <= 4 < pdr.failed and pdr.failed / pdr.passed - 1 <= 0.01  # type: ignore[operator]
    assert ndr.passed <= 3 < ndr.failed and ndr.failed / ndr.passed - 1 <= 0.01  # type: ignore[operator]
    alone = _search(lambda load: (load <= 3, load))
    ndr_own = sum(1 for s in steps.values() if s["goal"] == "ndr")
    assert ndr_own < alone.tried, (ndr_own, alone.tried)
    found = capacities(spec, "udp", "direct", trials, steps)  # type: ignore[arg-type]
    assert found["direct"]["value"] == pdr.passed and found["direct"]["goals"]["ndr"]["value"] == ndr.passed
    assert found["direct"]["goals"]["ndr"]["finals_passed"] == 3
    assert sum(t["final"] for t in found["direct"]["goals"]["ndr"]["tried"]) == 3
