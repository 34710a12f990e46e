"""Whole runs in the embedded engine with the real iperf3."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import psutil
import pytest

from controller.store import Store
from tests.conftest import Vtax

RELAY_SPEC = """\
name: relay-2x2
agents: [{name: client}, {name: server}]
conditions:
  - name: direct
    baseline: true
    setup: "echo setup $VTAX_CONDITION $VTAX_TRIAL $VTAX_REPETITION >> hooks.log"
    teardown: "echo teardown $VTAX_CONDITION $VTAX_TRIAL >> hooks.log"
  - name: relay
    appliance: relay
    setup: "RELAY_SETUP"
    teardown: "echo teardown $VTAX_CONDITION $VTAX_TRIAL >> hooks.log"
workloads:
  - kind: iperf3
    agents: [client]
    server: server
timing: {warmup: 1, steady: 2, cooldown: 0.5, lead: 0.5}
repetitions: 2
"""
LOGGING_SETUP = "echo setup $VTAX_CONDITION $VTAX_TRIAL $VTAX_REPETITION >> hooks.log"


def relay_spec(relay_setup: str = LOGGING_SETUP) -> str:
    return RELAY_SPEC.replace("RELAY_SETUP", relay_setup)


@pytest.fixture(scope="module")
def relay_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Vtax, subprocess.CompletedProcess[str], dict]:
    vtax = Vtax(tmp_path_factory.mktemp("relay-run"))
    done, result = vtax.run_json(vtax.spec(relay_spec()))
    return vtax, done, result


def test_run_completes_and_follows_the_json_contract(relay_run) -> None:
    _, done, result = relay_run
    assert done.returncode in (0, 1), done.stderr
    assert result["baseline"] == "direct"
    assert result["conditions"] == ["direct", "relay"]
    assert result["run_id"] and result["status"] == "completed"
    assert [t["status"] for t in result["trials"]] == ["ok"] * 4
    for name in ("iperf3.throughput_gbps", "iperf3.rtt_ms", "host.cpu_pct", "host.cpu_per_gbps"):
        metric = result["metrics"][name]
        assert metric["unit"]
        for condition in ("direct", "relay"):
            described = metric["by_condition"][condition]
            assert described["n"] == 2 and len(described["values"]) == 2
            low, high = described["ci95"]
            assert low <= described["mean"] <= high
        over = metric["overhead"]["relay"]
        assert set(over) >= {"delta", "pct", "ci95_pct", "p_value", "significant"}
        assert over["ci95_pct"][0] <= over["pct"] <= over["ci95_pct"][1]
        assert isinstance(over["significant"], bool)
    assert isinstance(result["validity"], list)
    assert all({"level", "code", "message"} <= set(v) for v in result["validity"])
    throughput = result["metrics"]["iperf3.throughput_gbps"]["by_condition"]
    assert throughput["direct"]["mean"] > 0.5 and throughput["relay"]["mean"] > 0.5
    assert "iperf3.throughput_gbps" in done.stdout and "relay" in done.stdout  # the table


def test_interleaved_order_is_what_ran(relay_run) -> None:
    vtax, _, result = relay_run
    assert result["order"] == ["direct", "relay", "direct", "relay"]
    hooks = (vtax.workdir / "hooks.log").read_text().splitlines()
    assert hooks == [
        "setup direct 0 1",
        "teardown direct 0",
        "setup relay 1 1",
        "teardown relay 1",
        "setup direct 2 2",
        "teardown direct 2",
        "setup relay 3 2",
        "teardown relay 3",
    ]


def test_kpis_come_from_the_steady_phase_only(relay_run) -> None:
    vtax, _, result = relay_run
    store = Store(vtax.store, create=False)
    start_at = store.trials(result["run_id"])[0]["start_at"]
    rows = store.samples(result["run_id"], 0)
    assert len(rows) >= 3  # warm-up + steady seconds were all stored
    steady = [s["values"]["throughput_gbps"] for s in rows if start_at + 1 <= s["t"] + s["dt"] / 2 < start_at + 3]
    assert result["trials"][0]["kpis"]["iperf3.throughput_gbps"] == pytest.approx(sum(steady) / len(steady))


def test_show_recomputes_the_same_result(relay_run) -> None:
    vtax, _, result = relay_run
    out = vtax.workdir / "again.json"
    done = vtax("show", result["run_id"][:15], "--json", str(out))
    assert done.returncode == 0, done.stderr
    again = json.loads(out.read_text())
    assert again["metrics"] == result["metrics"]
    listing = vtax("runs")
    assert result["run_id"] in listing.stdout and "completed" in listing.stdout


def test_failing_setup_hook_stops_the_run_and_still_tears_down(vtax: Vtax) -> None:
    spec = vtax.spec(relay_spec("echo cannot reach appliance >&2; exit 7"))
    done, result = vtax.run_json(spec)
    assert done.returncode == 3, done.stderr
    assert "setup hook of condition 'relay' exited 7" in done.stderr
    assert "cannot reach appliance" in done.stderr
    assert "Traceback" not in done.stderr
    assert result is None
    hooks = (vtax.workdir / "hooks.log").read_text().splitlines()
    assert hooks == ["setup direct 0 1", "teardown direct 0", "teardown relay 1"]
    listing = json.loads(vtax("runs", "--json").stdout)
    assert listing[0]["status"] == "aborted" and "exited 7" in listing[0]["reason"]


def test_a_trial_that_overruns_its_deadline_is_killed_and_recorded(vtax: Vtax, silent_server: int) -> None:
    spec = vtax.spec(f"""\
        name: hang
        agents: [{{name: client}}]
        conditions: [{{name: only, baseline: true}}]
        workloads:
          - kind: iperf3
            agents: [client]
            params: {{target: "127.0.0.1:{silent_server}"}}
        timing: {{warmup: 0, steady: 1, cooldown: 0, grace: 1.5, lead: 0.2}}
        repetitions: 1
        """)
    started = time.monotonic()
    done, result = vtax.run_json(spec, timeout=60)
    assert time.monotonic() - started < 30
    assert done.returncode == 1, done.stderr
    trial = result["trials"][0]
    assert trial["status"] == "killed"
    assert "deadline" in trial["reason"]
    assert any(v["code"] == "trial_killed" and v["level"] == "error" for v in result["validity"])


def test_ctrl_c_stops_the_run_and_runs_teardown(vtax: Vtax) -> None:
    spec = vtax.spec(relay_spec().replace("steady: 2", "steady: 60"))
    proc = vtax.start("run", str(spec))
    log = vtax.workdir / "hooks.log"
    give_up = time.monotonic() + 20
    while not log.exists() and time.monotonic() < give_up:
        time.sleep(0.1)
    time.sleep(2.5)  # the load is running
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert log.read_text().splitlines() == ["setup direct 0 1", "teardown direct 0"]
    listing = json.loads(vtax("runs", "--json").stdout)
    assert listing[0]["status"] == "interrupted"
    time.sleep(0.5)
    clients = [p.pid for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[1:3] == ["-c", "127.0.0.1"]]
    assert clients == [], "iperf3 clients outlived the interrupted run"


def test_a_breached_sla_exits_1_and_says_which(vtax: Vtax) -> None:
    spec = vtax.spec("""\
        name: neighbours
        agents: [{name: busy}]
        conditions: [{name: idle, baseline: true}, {name: loaded}]
        workloads:
          - {kind: cpu, name: burn, agents: [busy], params: {workers: 1, percent: 30}}
        timing: {warmup: 0.5, steady: 1.5, cooldown: 0, lead: 0.3}
        repetitions: 2
        sla:
          burn.achieved_pct: {min: 1000}
        """)
    done, result = vtax.run_json(spec)
    assert done.returncode == 1, done.stderr
    failed = [check for check in result["sla"] if not check["ok"]]
    assert {(c["metric"], c["condition"], c["rule"]) for c in failed} == {
        ("burn.achieved_pct", "idle", "min"),
        ("burn.achieved_pct", "loaded", "min"),
    }
    assert 10 < failed[0]["value"] < 40  # the burner got about the 30 % it asked for
    assert "SLA failed: burn.achieved_pct min 1000" in done.stdout


@pytest.mark.slow
def test_the_loopback_example_runs(vtax: Vtax) -> None:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "examples" / "loopback.yaml").read_text()
    assert "repetitions: 5 " in text
    # the example as written, but 1 of its 5 repetitions: what it measures is checked, not its noise (that is
    # the demo test's job), in a fifth of the time
    done, result = vtax.run_json(vtax.spec(text.replace("repetitions: 5 ", "repetitions: 1 "), "loopback.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"tcp.throughput_gbps", "neighbour.achieved_pct", "host.cpu_per_gbps"} <= set(result["metrics"])
    throughput = result["metrics"]["tcp.throughput_gbps"]["by_condition"]
    assert throughput["relay"]["n"] == 1
    assert result["sla"] and all(check["ok"] for check in result["sla"])
    # sized for a 2-core box: both conditions carry the offered 4 Gbit/s and the host is never saturated, so
    # the relay's cost shows in host CPU per Gbit/s instead of in warnings
    assert throughput["direct"]["mean"] == pytest.approx(4.0, rel=0.05)
    assert throughput["relay"]["mean"] == pytest.approx(4.0, rel=0.05)
    assert not [v for v in result["validity"] if v["code"] == "host_saturated"], result["validity"]
    # the profile's VMs per host follow from each condition's measured host CPU per Gbit/s (which of the two
    # costs more needs the example's 5 repetitions: one trial's host CPU on this box varies 3-fold)
    cost = result["metrics"]["host.cpu_per_gbps"]["by_condition"]
    for condition, modelled in result["consolidation"].items():
        assert modelled["modelled"] and modelled["cpu_per_gbps"] == cost[condition]["mean"], modelled
        assert modelled["vms"] == pytest.approx(100 / (2 + 0.5 * cost[condition]["mean"])), modelled
    assert "modelled VMs per host" in done.stdout and "(modelled)" in done.stdout


def test_a_killed_controller_leaves_no_process_behind(vtax: Vtax) -> None:
    """SIGKILL the controller mid-trial through the relay: its agents and the relay die with it within 2 s, and
    the servers, which are meant to outlive an agent, end at the trial deadline."""
    spec = vtax.spec("""\
        name: orphans
        agents: [{name: client}, {name: server}]
        conditions: [{name: relay, baseline: true, appliance: relay}]
        workloads: [{kind: iperf3, agents: [client], server: server}]
        timing: {warmup: 0, steady: 4, cooldown: 0, lead: 0.5, grace: 2}
        repetitions: 1
        """)
    proc = vtax.start("run", str(spec))
    controller = psutil.Process(proc.pid)
    give_up = time.monotonic() + 30
    while not any(p.name() == "iperf3" and "-c" in p.cmdline() for p in controller.children(recursive=True)):
        assert time.monotonic() < give_up, "the load never started"
        time.sleep(0.1)
    left = controller.children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = time.monotonic()
    servers = {p for p in left if _server_side(p)}
    others = [p for p in left if p not in servers]
    gone, alive = psutil.wait_procs(others, timeout=2)
    assert not _running(alive), [" ".join(p.cmdline()[:4]) for p in _running(alive)]
    _, alive = psutil.wait_procs(list(servers), timeout=max(0.1, 10 - (time.monotonic() - killed)))
    assert not _running(alive), "the servers outlived their trial's deadline"
    assert gone


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes that still run: a zombie has exited and only waits for whoever inherited it to reap it
    (seen in CI, where the orphans' new parent reaps late)."""
    running = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


def _server_side(process: psutil.Process) -> bool:
    """A workload's server (under coreutils `timeout`, in a session of its own until the deadline)."""
    try:
        return process.name() == "timeout" or any(parent.name() == "timeout" for parent in process.parents())
    except psutil.Error:
        return False


def test_a_search_past_what_one_iperf3_sends_is_generator_limited(vtax: Vtax) -> None:
    """UDP offered at 200 Gbit/s over loopback: one iperf3 process sends some Gbit/s (3 to 12 on this box),
    and with criteria that hold whatever it loses (loss at its full rate varies here from trial to trial), a
    trial that passes while carrying far less than offered must stop the search at once as generator_limited
    with the load it reached, not report a device capacity (NFVbench's rule)."""
    spec = vtax.spec("""\
        name: guard
        agents: [{name: client}, {name: server}]
        conditions: [{name: direct, baseline: true}]
        workloads: [{kind: iperf3, name: udp, agents: [client], server: server, params: {protocol: udp, window: 4M}}]
        timing: {warmup: 0.5, steady: 1.5, cooldown: 0, lead: 0.5}
        search:
          workload: udp
          low: 1
          high: 200
          criteria: {udp.loss_pct: {max: 100}}
          goals: {jitter: {udp.jitter_ms: {max: 1000}}}
        """)
    done, result = vtax.run_json(spec)
    assert result is not None, done.stderr
    found = result["capacity"]["direct"]
    assert found["stop"] == "generator_limited" and found["value"] is None, found
    assert 0.1 < found["reached"] < 200 * 0.95 and len(found["tried"]) == 1
    other = found["goals"]["jitter"]  # the same trial informs the second goal: it stops there too, at no extra trial
    assert other["stop"] == "generator_limited" and [t["trial"] for t in other["tried"]] == [0], other
    assert len(result["trials"]) == 1
    assert "the generator, not the device, was the limit" in done.stdout
