"""The namespace lab: guests, the appliance between them, and a distributed run across it (root only)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from controller.certs import read_env
from controller.lab.netns import STATE_DIR
from tests.cluster import free_port
from tests.conftest import Vtax

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root for network namespaces"),
]

RTT_PROBE = """
import socket, statistics, sys, time
samples = []
for _ in range(20):
    s = socket.socket()
    s.settimeout(2)
    t = time.perf_counter()
    try:
        s.connect((sys.argv[1], 9))  # nothing listens: the RST comes straight back, one round trip
    except ConnectionRefusedError:
        pass
    samples.append(1000 * (time.perf_counter() - t))
    s.close()
print(statistics.median(samples))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vtax, str]]:
    vtax = Vtax(tmp_path_factory.mktemp("lab"))
    vtax("lab", "down")
    port = free_port()
    done = vtax("lab", "up", "--guests", "4", "--agents", "--broker-port", str(port), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    vtax.extra_env = read_env(STATE_DIR / "certs" / "controller" / "broker.env")  # as `set -a; . …` gives it
    yield vtax, f"rediss://198.19.255.1:{port}/0"
    vtax("lab", "down")


def rtt_ms(src: str, dst: str) -> float:
    out = subprocess.run(
        ["ip", "netns", "exec", src, sys.executable, "-c", RTT_PROBE, dst], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def test_lab_agents_are_registered_in_their_zones(lab: tuple[Vtax, str]) -> None:
    vtax, broker = lab
    listed = {a["name"]: a for a in json.loads(vtax("agents", "--broker", broker, "--json").stdout)}
    assert set(listed) == {"g1", "g2", "g3", "g4"}
    assert listed["g1"]["zone"] == "a" and listed["g2"]["zone"] == "b"
    assert listed["g3"]["address"] == "198.18.1.13" and listed["g3"]["allow"] == ["198.18.0.0/15"]


def test_two_pairs_across_the_appliance(lab: tuple[Vtax, str]) -> None:
    vtax, broker = lab
    spec = vtax.spec("""\
        name: across
        agents: [{name: g1}, {name: g2}, {name: g3}, {name: g4}]
        conditions:
          - {name: direct, baseline: true, setup: "vtax lab appliance --off"}
          - name: rules
            setup: "vtax lab appliance --rules 1000"
            teardown: "vtax lab appliance --off"
        workloads:
          - kind: iperf3
            topology: pairs
            pairs: [{client: g1, server: g2}, {client: g3, server: g4}]
        timing: {warmup: 0.5, steady: 2, cooldown: 0, lead: 0.5}
        repetitions: 3
        """)  # 3, not 2: this shared machine halves a trial's throughput now and then, for seconds
    done, result = vtax.run_json(spec, "--broker", broker)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert [t["status"] for t in result["trials"]] == ["ok"] * 6
    assert result["order"] == ["direct", "rules"] * 3
    assert set(result["clocks"]) == {"g1", "g2", "g3", "g4"}
    assert result["start_skew_ms"]["max"] < 50
    throughput = result["metrics"]["iperf3.throughput_gbps"]
    assert throughput["by_condition"]["direct"]["mean"] > 0.5
    # 1,000 rules, each evaluated for every forwarded packet, cost throughput (measured here: ~17 ns/rule/packet)
    assert throughput["overhead"]["rules"]["pct"] < 0


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="steering needs a second CPU")
def test_steered_forwarding_shows_as_the_appliance_cpus_softirq(lab: tuple[Vtax, str]) -> None:
    """On veth, forwarding runs in the sender's context: with iperf3 pinned to CPU 0 the appliance's 1,000
    rules cost CPU 0 time. Steered to CPU 1 (`--cpu 1`), that work shows as CPU 1's softirq in the host
    counters, and as the host's busiest-core metric."""
    vtax, broker = lab
    spec = vtax.spec("""\
        name: steered
        agents: [{name: g1}, {name: g2}]
        conditions:
          - {name: inline, baseline: true, setup: "vtax lab appliance --rules 1000"}
          - name: steered
            setup: "vtax lab appliance --rules 1000 --cpu 1"
            teardown: "vtax lab appliance --off"
        workloads:
          - {kind: iperf3, agents: [g1], server: g2, params: {affinity: 0}}
        timing: {warmup: 0.5, steady: 2, cooldown: 0, lead: 0.5}
        repetitions: 1
        """)
    done, result = vtax.run_json(spec, "--broker", broker)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert [t["status"] for t in result["trials"]] == ["ok", "ok"]
    conditions = {t["idx"]: t["condition"] for t in result["trials"]}
    cpu1_softirq: dict[str, list[float]] = {"inline": [], "steered": []}  # each second of each trial
    db = sqlite3.connect(vtax.store)
    rows = db.execute("SELECT trial_idx, detail_json FROM host_counters WHERE run_id = ?", (result["run_id"],))
    for trial, detail in rows:
        cpu1_softirq[conditions[trial]].append(json.loads(detail)["per_core"]["softirq_pct"][1])
    inline, steered = (sum(v) / len(v) for v in cpu1_softirq.values())
    assert steered > 20 > 5 > inline, (inline, steered)
    busiest = result["metrics"]["host.cpu_max_core_pct"]["by_condition"]
    assert busiest["inline"]["mean"] > 80 and busiest["steered"]["mean"] > 50


def test_appliance_delay_rate_and_off(lab: tuple[Vtax, str]) -> None:
    vtax, _ = lab
    base = rtt_ms("vtax-g1", "198.18.2.12")
    assert base < 1.0
    assert vtax("lab", "appliance", "--delay", "5").returncode == 0
    delayed = rtt_ms("vtax-g1", "198.18.2.12")
    # one-way delay d adds d to the round trip, plus the userspace delayer's own (about 0.06 ms, see below)
    assert 5.0 <= delayed - base <= 6.5, delayed
    assert vtax("lab", "appliance", "--rate", "200").returncode == 0
    assert rtt_ms("vtax-g1", "198.18.2.12") < 1.0  # the new state replaces the old one
    server = subprocess.Popen(
        ["ip", "netns", "exec", "vtax-g2", "iperf3", "-s", "-1", "-B", "198.18.2.12", "-p", "5301"]
    )
    try:
        time.sleep(0.5)
        out = subprocess.run(
            ["ip", "netns", "exec", "vtax-g1", "iperf3", "-c", "198.18.2.12", "-p", "5301", "-t", "2", "-J"],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        server.wait(timeout=10)
    gbps = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    assert 0.15 < gbps < 0.21, gbps  # tbf 200 Mbit/s → about 0.19 Gbit/s of TCP goodput
    assert vtax("lab", "appliance", "--off").returncode == 0


def test_the_delayer_adds_little_of_its_own(lab: tuple[Vtax, str]) -> None:
    """A 0.01 ms delay: what the round trip grows by beyond it is the userspace delayer's own cost. Measured:
    0.055 ms with kernel timestamps, 1 µs timer slack and a spun last stretch; 0.17 ms (0.2 in the issue) when it
    slept until each release and timed packets from when it read them."""
    vtax, _ = lab
    base = min(rtt_ms("vtax-g1", "198.18.2.12") for _ in range(3))
    assert vtax("lab", "appliance", "--delay", "0.01").returncode == 0
    try:
        delayed = min(rtt_ms("vtax-g1", "198.18.2.12") for _ in range(3))
    finally:
        assert vtax("lab", "appliance", "--off").returncode == 0
    assert delayed - base - 0.01 < 0.12, f"the delayer adds {delayed - base - 0.01:.3f} ms"


def test_lab_refuses_a_second_up(tmp_path) -> None:
    vtax = Vtax(tmp_path)
    again = vtax("lab", "up", "--guests", "1")
    assert again.returncode == 2 and "already up" in again.stderr


def test_http_latency_across_a_delaying_appliance(lab: tuple[Vtax, str]) -> None:
    """The latency increase matches the injected delay.

    Keep-alive GET: one round trip per request. The appliance delays A→B by d = 5 ms and leaves B→A alone,
    so each request takes d longer, plus the userspace delayer's own ~0.06 ms per packet (this kernel
    has no netem). The histogram's buckets are ~1 % wide, under 0.1 ms here. Hence 5.0–6.5 ms at p50.
    """
    vtax, broker = lab
    spec = vtax.spec("""\
        name: http-delay
        agents: [{name: g1}, {name: g2}]
        conditions:
          - {name: direct, baseline: true, setup: "vtax lab appliance --off"}
          - name: delayed
            setup: "vtax lab appliance --delay 5"
            teardown: "vtax lab appliance --off"
        workloads:
          - kind: http
            agents: [g1]
            server: g2
            params: {scenario: get, object_size: 1k, users: 2}
        timing: {warmup: 1, steady: 2, cooldown: 0, lead: 0.5}
        repetitions: 2
        """)
    done, result = vtax.run_json(spec, "--broker", broker)
    assert [t["status"] for t in result["trials"]] == ["ok"] * 4, done.stdout + done.stderr
    p50 = result["metrics"]["http.latency_p50_ms"]
    increase = p50["overhead"]["delayed"]["delta"]
    assert 5.0 <= increase <= 6.5, increase
    assert result["metrics"]["http.failure_pct"]["by_condition"]["delayed"]["mean"] == 0


def test_a_udp_search_finds_an_injected_rate_cap(lab: tuple[Vtax, str]) -> None:
    """tbf at 500 Mbit/s on the appliance: the highest UDP load with at most 0.5 % loss is the cap's goodput
    (iperf3's 1,460-byte datagrams in 1,502-byte frames: 486 Mbit/s), found within −5 % and what one trial's
    buffers let pass above it, with its bracket, its final trials and every load tried; without the cap the
    path carries the upper bound."""
    vtax, broker = lab
    spec = vtax.spec("""\
        name: ndr
        agents: [{name: g1}, {name: g2}]
        conditions:
          - {name: direct, baseline: true, setup: "vtax lab appliance --off"}
          - name: capped
            setup: "vtax lab appliance --rate 500"
            teardown: "vtax lab appliance --off"
        workloads:
          - {kind: iperf3, name: udp, agents: [g1], server: g2, params: {protocol: udp, window: 4M}}
        timing: {warmup: 0.5, steady: 1.5, cooldown: 0, lead: 0.5}
        search:
          workload: udp
          low: 0.4
          high: 0.6
          precision_pct: 4
          final_repetitions: 2
          criteria: {udp.loss_pct: {max: 0.5}}
        """)
    done, result = vtax.run_json(spec, "--broker", broker, timeout=400)
    assert result is not None, done.stdout + done.stderr
    capped, direct = result["capacity"]["capped"], result["capacity"]["direct"]
    assert direct["stop"] == "above_high" and direct["value"] == 0.6, direct
    assert capped["stop"] == "found", capped
    expected = 0.5 * 1460 / 1502
    # A short trial can pass a little above the cap without loss: what the sender's 4 MiB socket buffer, the
    # tbf's burst and its 10 ms queue (625 kB each) hold back over its 2 s of load, and the search's 4 %
    # precision on top (CI found 0.5125: +5.4 %). The cap itself is never lower than its goodput.
    absorbed = (4 * 2**20 + 2 * 625_000) * 8 / 2.0 / 1e9
    assert expected * 0.95 <= capped["value"] <= (expected + absorbed) * 1.04, capped
    low, high = capped["bracket"]
    assert low == capped["value"] and high / low - 1 <= 0.04
    assert capped["finals_passed"] == 2 and capped["achieved"]["n"] == 2
    assert capped["overhead"] is not None and capped["overhead"]["pct"] < -15  # 0.486 against the bound 0.6
    assert [t["load"] for t in capped["tried"]][:2] == [0.6, 0.4]  # the bounds first
    # Above the cap the path drops (loss), or on veth holds the sender back instead (a queued packet stays charged
    # to its socket): on this machine it has done either from one day to the next. Each fails the trial.
    failed = [t["broken"][0] for t in capped["tried"] if not t["passed"]]
    assert failed and all("udp.loss_pct" in why or "the path held it back" in why for why in failed), failed
    assert "capacity of udp" in done.stdout and "Gbit/s [" in done.stdout
    made = vtax("report", result["run_id"], "-o", "capacity.html")
    assert made.returncode == 0, made.stderr
    page = (vtax.workdir / "capacity.html").read_text()
    assert 'id="capacity"' in page and "carried against offered load" in page


def test_calibration_measures_the_bed_and_an_injected_cap_back(lab: tuple[Vtax, str]) -> None:
    """`vtax calibrate`: the spec's baseline as an A/A pair gives the bed's capacity and noise floor; the lab's
    tbf at 300 Mbit/s comes back as its TCP goodput (300 × 1448/1514 = 286.9 Mbit/s) within ±5 %."""
    vtax, broker = lab
    spec = vtax.spec("""\
        name: bed
        agents: [{name: g1}, {name: g2}]
        conditions:
          - {name: direct, baseline: true, setup: "vtax lab appliance --off"}
          - {name: rules, setup: "vtax lab appliance --rules 1000", teardown: "vtax lab appliance --off"}
        workloads: [{kind: iperf3, agents: [g1], server: g2}]
        timing: {warmup: 0.5, steady: 1.5, cooldown: 0, lead: 0.5}
        repetitions: 2
        """)
    out = vtax.workdir / "calibration.json"
    done = vtax("calibrate", str(spec), "--inject-rate", "300", "--broker", broker, "--json", str(out), timeout=300)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    result = json.loads(out.read_text())
    found = result["calibration"]
    assert result["conditions"] == ["bed", "bed-again", "injected"]
    assert found["metric"] == "iperf3.throughput_gbps" and found["bed"]["mean"] > 1.0
    assert found["aa"]["method"] == "paired" and found["resolves_pct"] == found["aa"]["mde_pct"]
    injected = found["injected"]
    assert injected["expected"] == pytest.approx(0.3 * 1448 / 1514)
    assert abs(injected["error_pct"]) < 5, injected
    assert "test bed: iperf3.throughput_gbps" in done.stdout and "injected 300 Mbit/s measured" in done.stdout
    if done.returncode == 1:  # the A/A differed by chance or noise: said, not hidden
        assert "the bed is not stable" in done.stdout
