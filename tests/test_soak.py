"""Soaks, compressed to 40 s: the load runs on across segments, a CPU neighbour started at a known segment is
found there as a change point, the same soak without it (killed and resumed on the way) shows none and loses
nothing, and the spec's soak errors are one line each."""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from controller.errors import SpecError
from controller.spec import parse
from controller.store import Store
from tests.conftest import Vtax

SEGMENTS = 8  # the fewest that Mann-Kendall tests (drift.MIN_SEGMENTS)
SEGMENT_S = 3  # the shortest a spec allows: 3 samples a segment
STEP_AT = 5  # the segment (from 1) at whose start the neighbour starts: 4 segments either side

# One CPU worker at 60 % of core 1; the neighbour is a busy loop pinned to the same core, so the worker gets
# about half of what it asks for (achieved_ratio 0.95 → 0.51, measured) from the neighbour's first second on.
SOAK = """\
name: soak
agents: [{name: a}]
conditions:
  - name: base
    baseline: true
    teardown: ["if [ -f hog.pid ]; then kill $(cat hog.pid); rm hog.pid; fi"]
workloads: [{kind: cpu, agents: [a], params: {workers: 1, percent: 60, cores: [1]}}]
timing: {lead: 0.5}
soak:
  duration: SECONDS
  segment: SEGMENT_S
  checks: {max_step_pct: 10}
"""
NEIGHBOUR = f"""\
  at:
    - segment: {STEP_AT}
      run: ["nohup taskset -c 1 python3 -c 'while True: pass' > /dev/null 2>&1 & echo $! > hog.pid"]
"""


def _spec(vtax: Vtax, neighbour: bool, segments: int = SEGMENTS) -> Path:
    text = SOAK.replace("SECONDS", str(segments * SEGMENT_S)).replace("SEGMENT_S", str(SEGMENT_S))
    text += NEIGHBOUR if neighbour else ""
    return vtax.spec(text, "stepped.yaml" if neighbour else "clean.yaml")


@pytest.fixture
def no_neighbour_left(vtax: Vtax) -> Iterator[None]:
    """Whatever happens to the run, the neighbour does not outlive the test."""
    yield
    pid = vtax.workdir / "hog.pid"
    if pid.exists():
        with contextlib.suppress(psutil.NoSuchProcess, ValueError):
            psutil.Process(int(pid.read_text())).send_signal(signal.SIGKILL)


@pytest.mark.slow
def test_a_neighbour_started_at_a_segment_is_found_there_and_fails_the_step_check(
    vtax: Vtax, no_neighbour_left: None
) -> None:
    done, result = vtax.run_json(_spec(vtax, neighbour=True))
    assert result is not None, done.stderr
    assert done.returncode == 1, "a level change over max_step_pct fails the soak"
    soak = result["soak"]
    assert soak["segments_measured"] == SEGMENTS and soak["gaps"] == []
    drift = soak["metrics"]["cpu.achieved_ratio"]["base"]
    [step] = drift["change_points"]
    assert abs(step["segment"] - (STEP_AT - 1)) <= 1, step  # `segment` counts from 0
    assert step["after"] < step["before"] and step["pct"] < -10
    failed = [c for c in soak["checks"] if not c["ok"]]
    assert any(c["check"] == "max_step_pct" and c["subject"] == "cpu.achieved_ratio (base)" for c in failed)
    assert "change points" in done.stdout and f"segment {step['segment'] + 1}:" in done.stdout
    assert not (vtax.workdir / "hog.pid").exists(), "the condition's teardown stopped the neighbour"

    # every segment's load began as the last one's ended: the samples run on with no gap over 1 s
    samples = Store(vtax.store, create=False).samples(result["run_id"])
    ends = [
        (min(s["t"] for s in own), max(s["t"] + s["dt"] for s in own))
        for _, group in itertools.groupby(samples, key=lambda s: s["trial_idx"])
        for own in [list(group)]
    ]
    assert len(ends) == SEGMENTS
    assert all(later[0] - earlier[1] < 1.0 for earlier, later in itertools.pairwise(ends)), ends

    shown = vtax("show", result["run_id"], "--segments")
    assert shown.returncode == 0 and f"segments of run {result['run_id']}" in shown.stdout
    assert shown.stdout.count(" base ") >= SEGMENTS


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ("timing: {steady: 30}\n", "timing.steady", "set `soak.segment` instead"),
        ("repetitions: 3\n", "repetitions", "does not search or repeat"),
        ("  at: [{segment: 99, run: ['true']}]\n", "soak.at[0].segment", "past the soak's 8 segments"),
        ("  conditions: [nosuch]\n", "soak.conditions[0]", "no condition named 'nosuch'"),
    ],
)
def test_soak_spec_errors_name_the_field(extra: str, field: str, message: str) -> None:
    text = SOAK.replace("SECONDS", "40").replace("SEGMENT_S", "5").replace("timing: {lead: 0.5}\n", "")
    text = text + extra if extra.startswith("  ") else extra + text
    with pytest.raises(SpecError) as refused:
        parse(text, "soak.yaml")
    assert field in str(refused.value) and message in str(refused.value), str(refused.value)


def test_a_soak_shorter_than_two_segments_and_a_bad_span_are_refused(vtax: Vtax) -> None:
    for duration, says in (("8", "shorter than two segments"), ("2 weeks", "24h")):
        with pytest.raises(SpecError) as refused:
            parse(SOAK.replace("SECONDS", duration).replace("SEGMENT_S", "5"), "soak.yaml")
        assert "soak" in str(refused.value) and says in str(refused.value), str(refused.value)
    fine = vtax("validate", str(vtax.spec(SOAK.replace("SECONDS", "24h").replace("SEGMENT_S", "1m"))))
    assert fine.returncode == 0 and "a soak of 24 h 0 min in 1,440 segments of 60 s" in fine.stdout, fine.stdout


@pytest.mark.slow
def test_the_same_soak_without_the_neighbour_killed_and_resumed_shows_no_change(vtax: Vtax) -> None:
    """The soak without the neighbour, its controller SIGKILLed in the middle of its fourth segment. `vtax run
    --resume RUN` collects what the agent kept of that segment (its first second: stored, cut short, left out of
    the statistics), then goes on with the spec the soak started with: every segment is stored with its
    samples, the time away shows as a gap, and the worker's achieved ratio shows neither a change point nor a
    trend across it."""
    segments = SEGMENTS + 1  # one is cut short, and the trend test needs SEGMENTS
    proc = vtax.start("run", str(_spec(vtax, neighbour=False, segments=segments)))
    give_up = time.monotonic() + 60
    while not (vtax.store.exists() and len(Store(vtax.store).runs()) == 1 and _stored(vtax) >= 3):
        assert time.monotonic() < give_up and proc.poll() is None, "three segments never got stored"
        time.sleep(0.2)
    time.sleep(SEGMENT_S / 2)  # into the next segment, past its first sample
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(SEGMENT_S)  # away for at least a segment, however fast the resume starts: a gap, not jitter
    before = _stored(vtax)
    [run] = json.loads(vtax("runs", "--json").stdout)
    assert run["status"] == "interrupted"
    refused = vtax("run", "clean.yaml", "--resume", run["id"])
    assert refused.returncode == 2 and "give the run id alone" in refused.stderr

    out = vtax.workdir / "resumed.json"
    done = vtax("run", "--resume", run["id"][:15], "--json", str(out))
    assert done.returncode == 0 and out.exists(), done.stdout + done.stderr
    assert f"segment {before + 1}/{segments} (base) collected from its agents" in done.stdout, done.stdout
    result = json.loads(out.read_text())
    assert result["run_id"] == run["id"] and result["status"] == "completed"
    soak = result["soak"]
    stored = sorted(t["idx"] for t in result["trials"])
    [cut] = [t for t in result["trials"] if t["status"] == "cut_short"]
    assert stored == list(range(segments)) and cut["idx"] == before and soak["segments_measured"] == SEGMENTS
    assert {"trial": before, "level": "warning", "code": "trial_cut_short"}.items() <= next(
        v for v in result["validity"] if v["code"] == "trial_cut_short"
    ).items()
    [gap] = soak["gaps"]  # the time away, between the segment cut short and the first after the resume
    assert gap["after"] == before and gap["seconds"] > 1.0
    assert "soak_gap" in {v["code"] for v in result["validity"]}
    samples = Store(vtax.store, create=False).samples(run["id"])
    assert {s["trial_idx"] for s in samples} == set(stored), "a stored segment lost its samples"
    kept = [s for s in samples if s["trial_idx"] == before]
    assert 1 <= len(kept) < SEGMENT_S and kept[0]["t"] == pytest.approx(cut["start_at"], abs=0.1)
    assert not list((vtax.workdir / "state" / "vtax" / "kept").glob("*/*/*")), "the agent forgot what it kept"

    drift = soak["metrics"]["cpu.achieved_ratio"]["base"]
    assert drift["change_points"] == [] and drift["trend"]["verdict"] == "no trend", drift
    assert soak["memory"]["a"]["ratio"] < 1.3  # an agent that does not leak passes the memory check
    again = vtax("run", "--resume", run["id"])
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def _stored(vtax: Vtax) -> int:
    return sqlite3.connect(vtax.store).execute("SELECT COUNT(*) FROM trials").fetchone()[0]


WINDOWED = """\
name: windows
agents: [{name: client}, {name: server}]
conditions: [{name: base, baseline: true}]
workloads: [{kind: http, name: web, agents: [client], server: server}]
sla:
  web.latency_p99_ms: {max: 5, window: WINDOW}
  web.rps: {min: 900, window: WINDOW}
soak: {duration: 120, segment: 10}
"""


def _windowed_soak(tmp_path: Path, window: str) -> dict:
    """A hand-made HTTP soak of 12 segments × 10 s at 1,000 requests/s, 1 ms each; in segment 8, 1.2 % of the
    requests take 10 ms and the rate drops to 800/s. Its p99 is then 10 ms, while a window of segments 7 and 8
    holds 0.6 % slow requests: p99 1 ms, as merging their histograms says and averaging their p99s does not.
    The host's memory in use grows by 100 MiB a segment from 1,000; the appliance's stays at 500 MiB."""
    from controller.analysis import analyse
    from workloads import histogram

    experiment = parse(WINDOWED.replace("WINDOW", window), "windows.yaml")
    store = Store(tmp_path / f"windows-{window}.db")
    store.create_run(run_id="w", name="windows", engine="embedded", spec_path=None, spec=experiment.model_dump())
    fast, slow = histogram.bucket(1.0), histogram.bucket(10.0)
    for idx in range(12):
        start = 1_800_000_000.0 + 10 * idx
        hist, rps = ({fast: 988, slow: 12}, 800.0) if idx == 7 else ({fast: 1000}, 1000.0)
        samples = [{"t": start + s, "dt": 1.0, "values": {"rps": rps}, "histogram": hist} for s in range(10)]
        store.add_agent_result("w", idx, {
            "agent": "client", "workload": "web", "status": "ok", "reason": "", "samples": samples, "summary": {},
        })  # fmt: skip
        memory = {"host.mem_used_mb": 1000.0 + 100 * idx, "appliance.rss_mb": 500.0}
        store.add_host_samples(
            "w", idx, [{"t": start + s, "dt": 1.0, "host": "h", "values": memory} for s in range(10)]
        )
        store.add_trial("w", {
            "idx": idx, "condition": "base", "repetition": idx + 1, "status": "ok", "reason": "",
            "start_at": start, "deadline": start + 20, "ended": start + 10,
        })  # fmt: skip
    return analyse(store, "w")["soak"]


def test_an_sla_window_merges_its_segments_histograms_and_averages_the_rest(tmp_path: Path) -> None:
    by_check = {c["check"]: c for c in _windowed_soak(tmp_path, "20")["checks"]}
    p99, rps = by_check["sla_window_max"], by_check["sla_window_min"]
    assert p99["ok"] and p99["value"] == pytest.approx(1.0, rel=0.01), p99  # 0.6 % slow: p99 in the fast bucket
    assert rps["ok"] and rps["value"] == pytest.approx(900.0) and "0 of 6 fail" in rps["message"], (
        rps
    )  # (1,000 + 800) / 2

    by_check = {c["check"]: c for c in _windowed_soak(tmp_path, "10")["checks"]}
    p99, rps = by_check["sla_window_max"], by_check["sla_window_min"]
    assert not p99["ok"] and p99["value"] == pytest.approx(10.0, rel=0.01), p99
    assert "1 of 12 fail; worst 10" in p99["message"] and "from hour 0.02" in p99["message"], p99
    assert not rps["ok"] and rps["value"] == 800.0


def test_the_hosts_and_the_appliances_memory_growth_is_checked(tmp_path: Path) -> None:
    """Over 12 segments the host's memory grows 100 MiB each (36,000 MiB/h at 10 s a segment); the medians of
    the first and last quarter, 1,100 and 2,000 MiB, are 1.82 apart: over max_memory_ratio's 1.3."""
    soak = _windowed_soak(tmp_path, "20")
    host, appliance = soak["host_memory"]["host.mem_used_mb"], soak["host_memory"]["appliance.rss_mb"]
    assert host["slope_per_h"] == pytest.approx(36_000) and (host["first_hour"], host["end"]) == (1100.0, 2000.0)
    assert appliance["slope_per_h"] == 0.0 and appliance["ratio"] == 1.0
    by_subject = {c["subject"]: c for c in soak["checks"] if c["check"] == "max_memory_ratio"}
    assert not by_subject["host.mem_used_mb"]["ok"] and by_subject["appliance.rss_mb"]["ok"]
    assert by_subject["host.mem_used_mb"]["message"] == "host.mem_used_mb memory 1100 → 2000 MB (+36000.0 MB/h)"


def test_an_sla_window_outside_a_soak_or_its_span_is_refused() -> None:
    for spec, says in (
        (WINDOWED.replace("WINDOW", "5"), "a window spans segments (10 s) to the whole soak (120 s)"),
        (WINDOWED.replace("WINDOW", "30m"), "a window spans segments"),
        (WINDOWED.replace("WINDOW", "20").replace("soak: {duration: 120, segment: 10}\n", ""), "only a soak"),
    ):
        with pytest.raises(SpecError) as refused:
            parse(spec, "windows.yaml")
        assert "sla.web." in str(refused.value) and ".window" in str(refused.value) and says in str(refused.value)


def test_a_resumed_soak_replays_the_timed_hooks_of_the_segments_before_it(tmp_path: Path) -> None:
    """Resumed at segment 7 (index 6): the hooks of segments 3 and 5 run again after the setup, so what they
    changed holds again; segment 9's is still to come, and a soak that is not resumed replays nothing."""
    from controller.engine import EmbeddedEngine
    from controller.plan import soak_plan
    from controller.runloop import RunLoop

    spec = SOAK.replace("SECONDS", "30").replace("SEGMENT_S", "3") + (
        "  at:\n    - {segment: 3, run: ['echo three']}\n    - {segment: 5, run: ['echo five']}\n"
        "    - {segment: 9, run: ['echo nine']}\n"
    )
    experiment = parse(spec, "soak.yaml")
    loop = RunLoop(experiment, store=Store(tmp_path / "s.db"), engine=EmbeddedEngine({}), spec_path=None, resume="r")
    left = soak_plan(experiment)[6:]
    assert loop._replayed(left[0]) == ["echo three", "echo five"]
    fresh = RunLoop(experiment, store=Store(tmp_path / "s.db"), engine=EmbeddedEngine({}), spec_path=None)
    assert fresh._replayed(left[0]) == []
