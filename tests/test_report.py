"""The live display: what a user watches while a run goes on."""

from __future__ import annotations

import io
import logging
import time

import pytest
from rich.console import Console

from controller.events import Events
from controller.plan import Trial
from controller.report import LiveDisplay, duration
from controller.spec import SlaRule


def _shown(display: LiveDisplay) -> str:
    out = Console(file=io.StringIO(), width=160, color_system=None)
    out.print(display._render())
    assert isinstance(out.file, io.StringIO)
    return out.file.getvalue()


def test_each_host_has_its_cpu_and_a_late_sample_of_an_earlier_trial_is_not_shown() -> None:
    events = Events()
    display = LiveDisplay(Console(file=io.StringIO()), events, warmup=1, steady=3)
    first, second = (Trial(index=i, condition="c", repetition=i + 1) for i in range(2))
    events.trial_start.fire(trial=first, total=2, start_at=time.time(), duration=5)
    assert "host CPU –" in _shown(display)
    events.host_sample.fire(trial=first, sample={"host": "esx-b", "values": {"host.cpu_pct": 40.0}})
    events.host_sample.fire(trial=first, sample={"host": "esx-a", "values": {"host.cpu_pct": 12.5}})
    assert "host CPU esx-a 12.5 %  esx-b 40 %" in _shown(display)

    events.trial_start.fire(trial=second, total=2, start_at=time.time(), duration=5)
    events.host_sample.fire(trial=first, sample={"host": "esx-a", "values": {"host.cpu_pct": 99.0}})  # vCenter's, late
    shown = _shown(display)
    assert "trial 2/2" in shown and "host CPU –" in shown


def test_a_failing_listener_is_logged_by_name_and_the_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    """An output's bug must never cost a measurement or hide the error that stopped a run."""
    events = Events()
    heard: list[int] = []

    def broken_output(**_: object) -> None:
        raise RuntimeError("display bug")

    events.trial_kpis.add_listener(broken_output)
    events.trial_kpis.add_listener(lambda **kwargs: heard.append(kwargs["trial"]))
    with caplog.at_level(logging.ERROR, logger="vtax.events"):
        events.trial_kpis.fire(trial=7, kpis={})
    assert heard == [7]
    assert "broken_output" in caplog.text and "trial_kpis" in caplog.text and "display bug" in caplog.text


def test_kpis_that_arrive_after_their_trial_are_shown_again() -> None:
    """vCenter's counters come after their trial: the display prints the trial's recomputed KPIs."""
    events = Events()
    out = io.StringIO()
    LiveDisplay(Console(file=out, width=160, color_system=None), events, warmup=1, steady=3)
    trial = Trial(index=0, condition="sva", repetition=1)
    record = {"status": "ok", "reason": ""}
    events.trial_end.fire(trial=trial, total=4, record=record, kpis={"iperf3.throughput_gbps": 20.0})
    events.trial_kpis.fire(trial=trial, kpis={"iperf3.throughput_gbps": 20.0, "host.cpu_pct": 30.0})
    lines = out.getvalue().splitlines()
    assert "host.cpu_pct" not in lines[0]
    assert "trial 1/4  sva #1  host counters in" in lines[1] and "host.cpu_pct 30" in lines[1]


def test_a_trial_over_an_sla_limit_shows_while_the_run_goes_on() -> None:
    """Each trial's KPIs are held to the SLA's limits as it ends: a breach is said once, and so is the return."""
    events = Events()
    out = io.StringIO()
    sla = {"web.latency_p99_ms": SlaRule(max=5.0), "web.rps": SlaRule(min=900.0)}
    display = LiveDisplay(Console(file=out, width=160, color_system=None), events, warmup=0, steady=60, sla=sla)
    record = {"status": "ok", "reason": ""}
    for idx, p99 in enumerate([1.0, 7.3, 8.0, 2.0]):
        trial = Trial(index=idx, condition="base", repetition=idx + 1, segment=idx, segments=4)
        events.trial_end.fire(trial=trial, total=4, record=record, kpis={"web.latency_p99_ms": p99, "web.rps": 950.0})
        if idx == 2:
            assert display._over == {"web.latency_p99_ms": "web.latency_p99_ms 7.3 > max 5 (trial 2)"}
    said = [line for line in out.getvalue().splitlines() if line.startswith("SLA:")]
    assert said == [
        "SLA: web.latency_p99_ms 7.3 > max 5 (trial 2), already over its limit",
        "SLA: web.latency_p99_ms back within its limit (trial 4)",
    ]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (45, "45 s"),
        (89.4, "89 s"),
        (90, "1 min 30 s"),
        (200, "3 min 20 s"),
        (5 * 3600 + 12 * 60, "5 h 12 min"),
        (172_944, "2 d 0 h"),
    ],
)
def test_durations_read_as_a_person_says_them(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_the_display_says_what_it_does_after_the_load_and_how_long_the_run_has_left() -> None:
    events = Events()
    display = LiveDisplay(Console(file=io.StringIO()), events, warmup=1, steady=3)
    trials = [Trial(index=i, condition="c", repetition=i + 1) for i in range(4)]
    events.run_start.fire(run_id="r", trials=trials)
    try:
        display._run_started = time.time() - 120  # two trials of a minute each are done
        for trial in trials[:2]:
            events.trial_end.fire(trial=trial, total=4, record={"status": "ok", "reason": ""}, kpis={})
        events.trial_start.fire(trial=trials[2], total=4, start_at=time.time() - 6, duration=4)
        events.agent_progress.fire(agent="neighbour", workload="neighbour", values={"achieved_pct": 20.0})
        events.agent_progress.fire(agent="web1", workload="tcp", values={"throughput_gbps": 9.5})
        shown = _shown(display)
    finally:
        events.run_end.fire(run_id="r", status="completed")
    assert "collecting results  ·  run 2 min 0 s, about 2 min 0 s left" in shown
    assert "6/4 s" not in shown
    assert "neighbour: achieved_pct 20" in shown and "neighbour neighbour" not in shown
    assert "web1 tcp: throughput_gbps 9.5" in shown
