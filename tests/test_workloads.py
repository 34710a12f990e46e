"""Workloads and agent tasks against the real iperf3 program and real CPU burners."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import time

import pytest

from agent.tasks import TASKS, TaskIO
from controller.store import Store
from tests.conftest import Vtax
from workloads import get, iperf3
from workloads.serving import listening


def _run(kind: str, params: dict, *, seconds: float = 2, target: dict | None = None) -> dict:
    now = time.time()
    return TASKS["vtax.run_workload"](
        agent="a",
        workload=kind,
        kind=kind,
        params=params,
        target=target,
        start_at=now + 0.1,
        duration=seconds,
        deadline=now + seconds + 10,
    )


def _serve(params: dict) -> dict:
    return TASKS["vtax.serve"](kind="iperf3", params=params, bind="127.0.0.1", deadline=time.time() + 20)


def test_cpu_workers_get_the_duty_cycle_they_ask_for() -> None:
    result = _run("cpu", {"workers": 1, "percent": 40}, seconds=3)
    assert result["status"] == "ok", result["reason"]
    assert len(result["samples"]) >= 2
    # a shared 2-core machine: the burner may be delayed, but it never gets far more than it asks for
    assert 20 <= result["summary"]["achieved_pct"] <= 48
    assert 0.5 <= result["summary"]["achieved_ratio"] <= 1.2


def test_tcp_samples_carry_rtt_and_retransmits() -> None:
    params = {"protocol": "tcp", "streams": 2}
    result = _run("iperf3", params, target=_serve(params))
    assert result["status"] == "ok", result["reason"]
    assert len(result["samples"]) == 2
    for sample in result["samples"]:
        assert sample["values"]["throughput_gbps"] > 0.1
        assert {"retransmits", "rtt_ms", "cwnd_kb"} <= set(sample["values"])
    assert abs(result["started_at"] - result["start_at"]) < 0.05


def test_udp_samples_carry_jitter_and_loss_from_the_receiver() -> None:
    params = {"protocol": "udp", "bitrate": "200M", "window": "4M"}
    result = _run("iperf3", params, target=_serve(params))
    assert result["status"] == "ok", result["reason"]
    for sample in result["samples"]:
        assert sample["values"]["throughput_gbps"] == pytest.approx(0.2, rel=0.1)
        assert sample["values"]["jitter_ms"] >= 0
        assert 0 <= sample["values"]["loss_pct"] < 5


def test_the_seconds_of_several_client_processes_merge_as_across_agents() -> None:
    """Throughput is summed, RTT and loss averaged, and a second one process missed is dropped rather than
    counted as a fall in the sum."""
    one = [
        {"t": 10.0, "dt": 1.0, "values": {"throughput_gbps": 1.0, "rtt_ms": 0.25, "loss_pct": 1.0}},
        {"t": 11.0, "dt": 1.0, "values": {"throughput_gbps": 1.5, "rtt_ms": 0.4, "loss_pct": 0.0}},
    ]
    two = [{"t": 10.0, "dt": 1.0, "values": {"throughput_gbps": 2.0, "rtt_ms": 0.5, "loss_pct": 3.0}}]
    merged = list(iperf3.merge([one, two]))
    assert merged == [{"t": 10.0, "dt": 1.0, "values": {"throughput_gbps": 3.0, "rtt_ms": 0.375, "loss_pct": 2.0}}]
    assert list(iperf3.merge([one])) == one


def test_processes_take_consecutive_ports_and_cpus_round_robin() -> None:
    params = iperf3.Iperf3Params(processes=3, affinity=[0, 1])
    assert [params.cpu(i) for i in range(3)] == [0, 1, 0]
    assert iperf3.Iperf3Params(affinity=1).cpu(2) == 1
    for bad, says in (
        ({"processes": 2, "target": "127.0.0.1:65535"}, "2 consecutive ports"),
        ({"affinity": []}, "non-empty list"),
        ({"affinity": [0, 5000]}, "0 to 4095"),
    ):
        with pytest.raises(ValueError, match=says):
            iperf3.Iperf3Params(**bad)


def test_two_processes_sum_to_what_two_bare_iperf3_clients_carry() -> None:
    """Two processes paced at 1.5 Gbit/s each (a process that sent nothing would halve the sum) against two
    bare iperf3 clients run by hand at the same rate, side by side in one test: the per-second sum is theirs
    within 3 %, and the servers sit on consecutive ports."""
    params = {"processes": 2, "bitrate": "1500M"}
    target = _serve(params)
    assert {target["port"], target["port"] + 1} <= listening()
    result = _run("iperf3", params, target=target, seconds=3)
    assert result["status"] == "ok", result["reason"]
    summed = [s["values"]["throughput_gbps"] for s in result["samples"]]
    bare = _bare_clients(2, "1500M", seconds=3)
    assert len(summed) == 3
    assert sum(summed) / len(summed) == pytest.approx(bare, rel=0.03), (summed, bare)


def _bare_clients(count: int, bitrate: str, *, seconds: int) -> float:
    """The summed mean rate of `count` iperf3 clients started by hand against servers of their own."""
    servers, ports = [], []
    for _ in range(count):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        servers.append(subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(ports[-1])]))
    time.sleep(0.5)
    clients = [
        subprocess.Popen(
            ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-b", bitrate, "-t", str(seconds), "-J"],
            stdout=subprocess.PIPE,
        )
        for port in ports
    ]
    reports = [json.loads(client.communicate(timeout=30)[0]) for client in clients]
    for server in servers:
        server.wait(timeout=10)
    return sum(r["end"]["sum_sent"]["bits_per_second"] for r in reports) / 1e9


@pytest.mark.parametrize("direction", ["reverse", "bidir"])
def test_reverse_and_bidirectional(direction: str) -> None:
    params = {"protocol": "tcp", direction: True, "bitrate": "300M"}
    result = _run("iperf3", params, target=_serve(params))
    assert result["status"] == "ok", result["reason"]
    expected = 0.6 if direction == "bidir" else 0.3  # bidir reports both directions together
    assert result["summary"]["throughput_gbps"] == pytest.approx(expected, rel=0.15)


def test_a_refused_connection_is_an_error_not_a_crash() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    result = _run("iperf3", {}, target={"host": "127.0.0.1", "port": port})
    assert result["status"] == "error"
    assert "iperf3" in result["reason"] and "refused" in result["reason"].lower()
    assert result["samples"] == []


def test_the_agent_validates_parameters_again() -> None:
    with pytest.raises(ValueError, match="streams"):
        _run("iperf3", {"streams": 0}, target={"host": "127.0.0.1", "port": 9})


def test_reverse_and_bidir_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        get("iperf3").Params(reverse=True, bidir=True)


def test_running_load_reports_live_progress() -> None:
    params = {"protocol": "tcp"}
    readings: list[dict[str, float]] = []
    now = time.time()
    result = TASKS["vtax.run_workload"](
        agent="a",
        workload="w",
        kind="iperf3",
        params=params,
        target=_serve(params),
        start_at=now,
        duration=3,
        deadline=now + 15,
        io=TaskIO(progress=readings.append),
    )
    assert result["status"] == "ok", result["reason"]
    assert len(readings) >= 2
    assert all(r["throughput_gbps"] >= 0 for r in readings) and max(r["throughput_gbps"] for r in readings) > 0.1


@pytest.mark.parametrize(
    ("kind", "params", "warmup"),
    [("iperf3", "{}", 0.5), ("cpu", "{workers: 1, percent: 30}", 0.5), ("http", "{users: 2}", 0.5)],
)
def test_every_kind_loads_the_whole_steady_phase(vtax: Vtax, kind: str, params: str, warmup: float) -> None:
    """A trial of 2.5 s (steady ends at 2.5 s): the load and its samples run through it, so no steady_incomplete
    (iperf3 was given -t 2 for it, leaving the last half second without load), and each kind's first sample
    begins within 50 ms of the common start (locust was launched only then and took 0.67 s to import)."""
    server = ", server: s" if kind != "cpu" else ""
    spec = vtax.spec(
        f"""
        name: coverage
        agents: [{{name: c}}, {{name: s}}]
        conditions: [{{name: base, baseline: true}}]
        workloads: [{{kind: {kind}, agents: [c]{server}, params: {params}}}]
        timing: {{warmup: {warmup}, steady: {3 - warmup - 0.5}, cooldown: 0}}
        repetitions: 2
        """
    )
    done, result = vtax.run_json(spec)
    assert result is not None, done.stderr
    assert not [v for v in result["validity"] if v["code"] == "steady_incomplete"], result["validity"]
    store = Store(vtax.store, create=False)
    for trial in store.trials(result["run_id"]):
        own = store.samples(result["run_id"], trial["idx"])
        first, last_end, trial_start = own[0]["t"], max(s["t"] + s["dt"] for s in own), trial["start_at"]
        assert abs(first - trial_start) < 0.05, f"first sample {first - trial_start:+.3f} s from the start"
        assert last_end >= trial_start + 2.5 - 0.1


def test_a_load_longer_than_one_iperf3_test_runs_as_consecutive_tests() -> None:
    """iperf3 3.12 refuses -t over 86,400 s; a load longer than `chunk` runs as consecutive tests against a
    server that serves them all. With chunk 2, a 5 s load is tests of 2, 2 and 1 s, and its seconds run on with
    no pause over 1 s at a restart."""
    from workloads.iperf3 import chunks

    assert chunks(5, 2) == [2, 2, 1] and chunks(2.5, 86_400) == [3] and chunks(172_800, 86_400) == [86_400] * 2
    params = {"bitrate": "100M", "chunk": 2}
    result = _run("iperf3", params, seconds=5, target=_serve(params))
    assert result["status"] == "ok", result["reason"]
    samples = sorted(result["samples"], key=lambda s: s["t"])
    assert len(samples) == 5 and all(s["values"]["throughput_gbps"] > 0.09 for s in samples)
    pauses = [later["t"] - (earlier["t"] + earlier["dt"]) for earlier, later in itertools.pairwise(samples)]
    assert max(pauses) < 1.0, pauses
