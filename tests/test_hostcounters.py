"""Host counters from hypervisor agents: the `vtax.host_counters` task, in both engines, with a real busy
process standing in for an appliance VM's qemu process."""

from __future__ import annotations

import json
import secrets
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agent.tasks import TaskIO, host_counters
from tests.cluster import Agents, RedisServer, TimeSeriesServer
from tests.conftest import Vtax

ONE_CORE_PCT = 100.0 / psutil.cpu_count()  # one busy process, in % of all cores

HYPERVISOR_SPEC = """\
name: kvm
agents:
  - {name: hv, hypervisor: true, appliance_processes: "PATTERN"}
  - {name: guest}
conditions:
  - {name: idle, baseline: true}
  - name: busy
    setup: "PYTHON -c 'while True: pass' TOKEN >/dev/null 2>&1 & echo $! > appliance.pid"
    teardown: "kill $(cat appliance.pid)"
workloads: [{kind: cpu, agents: [guest], params: {workers: 1, percent: 10}}]
timing: {warmup: 1, steady: 2, cooldown: 0, lead: 0.5}
repetitions: REPETITIONS
"""


def hypervisor_spec(token: str, *, pattern: str | None = None, repetitions: int = 2) -> str:
    """The spec above: `busy` runs a busy process whose command line carries `token`, the appliance."""
    return (
        HYPERVISOR_SPEC.replace("PATTERN", pattern or token)
        .replace("PYTHON", sys.executable)
        .replace("TOKEN", token)
        .replace("REPETITIONS", str(repetitions))
    )


@pytest.fixture
def token(tmp_path: Path) -> Iterator[str]:
    """A unique appliance process name; a busy process left behind by a failed teardown is killed."""
    value = f"vtax-appliance-{secrets.token_hex(4)}"
    yield value
    for proc in psutil.process_iter(["cmdline"]):
        if value in (proc.info["cmdline"] or []):
            proc.kill()


def stored_host_rows(vtax: Vtax, run_id: str) -> list[tuple[str, dict, dict]]:
    db = sqlite3.connect(vtax.store)
    rows = db.execute("SELECT host, values_json, detail_json FROM host_counters WHERE run_id = ?", (run_id,))
    return [(host, json.loads(values), json.loads(detail)) for host, values, detail in rows]


def test_a_hypervisor_agent_is_the_host_counter_source(vtax: Vtax, token: str) -> None:
    done, result = vtax.run_json(vtax.spec(hypervisor_spec(token)))
    assert done.returncode in (0, 1), done.stderr
    assert [t["status"] for t in result["trials"]] == ["ok"] * 4
    rows = stored_host_rows(vtax, result["run_id"])
    assert len(rows) >= 4 * 2
    assert {(host, detail["agent"]) for host, _, detail in rows} == {(socket.gethostname(), "hv")}  # via the task
    cpu = result["metrics"]["host.cpu_pct"]["by_condition"]
    assert cpu["busy"]["mean"] > cpu["idle"]["mean"] + ONE_CORE_PCT / 2
    appliance = result["metrics"]["appliance.host_cpu_pct"]
    assert appliance["unit"] == "% of all cores"
    assert appliance["by_condition"]["idle"]["values"] == [0.0, 0.0]
    for value in appliance["by_condition"]["busy"]["values"]:
        assert 0.7 * ONE_CORE_PCT < value < 1.1 * ONE_CORE_PCT
    assert result["metrics"]["cpu.achieved_pct"]["by_condition"]["idle"]["n"] == 2  # the guest's load ran
    codes = {v["code"] for v in result["validity"]}
    assert not codes & {"host_counters_incomplete", "appliance_not_found"}


def test_a_distributed_hypervisor_agent_returns_its_host_samples(
    vtax: Vtax, broker: RedisServer, agents: Agents, token: str
) -> None:
    agents.start("hv", broker)
    agents.start("guest", broker)
    spec = hypervisor_spec(token, pattern=f"{token}-matches-nothing", repetitions=1)
    done, result = vtax.run_json(vtax.spec(spec), "--broker", broker.url)
    assert done.returncode in (0, 1), done.stderr
    assert result["engine"] == "distributed" and [t["status"] for t in result["trials"]] == ["ok", "ok"]
    assert "hv" in result["clocks"]
    rows = stored_host_rows(vtax, result["run_id"])
    assert len(rows) >= 2 * 2 and {detail["agent"] for _, _, detail in rows} == {"hv"}
    assert all(set(values) >= {"host.cpu_pct", "host.softirq_pct", "appliance.host_cpu_pct"} for _, values, _ in rows)
    assert result["metrics"]["host.cpu_pct"]["by_condition"]["busy"]["n"] == 1
    flagged = [v for v in result["validity"] if v["code"] == "appliance_not_found"]
    assert len(flagged) == 1 and "hv" in flagged[0]["message"]


def test_a_hypervisor_agent_streams_each_host_second_once(vtax: Vtax, token: str, tmp_path: Path) -> None:
    vm = TimeSeriesServer(tmp_path, "victoria-metrics").start()
    try:
        done, result = vtax.run_json(vtax.spec(hypervisor_spec(token, repetitions=1)), "--influx", vm.url)
        assert done.returncode in (0, 1), done.stderr
        stored = len(stored_host_rows(vtax, result["run_id"]))
        for field in ("cpu_pct", "appliance_host_cpu_pct"):
            series = [s for s in vm.export(f"vtax_host_{field}") if s["metric"]["run"] == result["run_id"]]
            assert {s["metric"]["host"] for s in series} == {socket.gethostname()}
            assert sum(len(s["values"]) for s in series) == stored  # written by the agent, not again by the controller
    finally:
        vm.stop()


def test_a_trial_cut_short_stops_the_hypervisor_agents_sampling(vtax: Vtax, tmp_path: Path) -> None:
    """A trial whose load fails at once ends early; the hypervisor agent is told, and writes no host seconds
    into the time the next trial will use (it would go on for the whole 6 s window otherwise)."""
    spec = """\
        name: cut-short
        agents: [{name: hv, hypervisor: true}, {name: guest}]
        conditions: [{name: only, baseline: true, teardown: "sleep 4"}]  # the run goes on past the window
        workloads: [{kind: iperf3, agents: [guest], params: {target: "127.0.0.1:9"}}]
        timing: {warmup: 1, steady: 5, cooldown: 0, lead: 0.5}
        repetitions: 1
        """
    vm = TimeSeriesServer(tmp_path, "victoria-metrics").start()
    try:
        done, result = vtax.run_json(vtax.spec(spec), "--influx", vm.url)
        assert done.returncode in (0, 1), done.stderr
        [trial] = result["trials"]
        assert trial["status"] == "error"  # nothing listens on the discard port
        series = [s for s in vm.export("vtax_host_cpu_pct") if s["metric"]["run"] == result["run_id"]]
        seconds = sum(len(s["values"]) for s in series)
        assert seconds <= 2, f"{seconds} host seconds written for a trial that ended at once"
    finally:
        vm.stop()


def test_the_task_samples_every_second_and_stops_on_cancel_and_at_the_deadline() -> None:
    start_at = time.time() + 0.2
    streamed: list[dict] = []
    began = time.monotonic()
    done = host_counters(
        start_at=start_at,
        seconds=30,
        deadline=start_at + 60,
        io=TaskIO(cancelled=lambda: time.time() > start_at + 2.3, host_sample=streamed.append),
    )
    assert time.monotonic() - began < 3.5
    assert done["status"] == "cancelled" and done["host"] == socket.gethostname()
    assert len(done["samples"]) == 2 and streamed == done["samples"]
    first = done["samples"][0]
    assert first["t"] == pytest.approx(start_at, abs=0.05) and first["dt"] == pytest.approx(1.0, abs=0.05)
    names = {"host.cpu_pct", "host.softirq_pct", "host.ctx_switches_per_s", "host.cpu_max_core_pct", "host.mem_used_mb"}
    assert set(first["values"]) == names
    assert len(first["per_core"]["cpu_pct"]) == psutil.cpu_count() and "lo" in first["net"]
    assert first["values"]["host.cpu_max_core_pct"] == max(first["per_core"]["cpu_pct"])

    start_at = time.time() + 0.2
    done = host_counters(start_at=start_at, seconds=30, deadline=start_at + 1.5)
    assert done["status"] == "deadline_exceeded" and len(done["samples"]) == 1
    assert time.time() - start_at < 2.0


def test_appliance_cpu_counts_every_matching_process(token: str) -> None:
    """Two busy processes match the pattern: the appliance's CPU is theirs together, as their own CPU times say
    (not two full cores: on a loaded machine they get less)."""
    busy = [psutil.Popen([sys.executable, "-c", "while True: pass", token]) for _ in range(min(2, psutil.cpu_count()))]
    try:
        start_at = time.time() + 0.5
        time.sleep(0.45)
        used, began = sum(sum(p.cpu_times()[:2]) for p in busy), time.monotonic()
        done = host_counters(start_at=start_at, seconds=2, deadline=start_at + 5, appliance_processes=f"{token}$")
        used = sum(sum(p.cpu_times()[:2]) for p in busy) - used
        theirs_pct = 100.0 * used / (time.monotonic() - began) / psutil.cpu_count()  # of all cores, as the host's
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    assert done["status"] == "ok" and len(done["samples"]) == 2
    assert theirs_pct > 0.5 * ONE_CORE_PCT, f"the busy processes got {theirs_pct:.0f} %: the test measured nothing"
    for sample in done["samples"]:
        assert sample["appliance"] == {"pattern": f"{token}$", "processes": len(busy)}
        assert sample["values"]["appliance.host_cpu_pct"] == pytest.approx(theirs_pct, rel=0.25)
        assert sample["values"]["host.cpu_pct"] >= sample["values"]["appliance.host_cpu_pct"] - 1
