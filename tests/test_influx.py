"""Streaming to real time-series servers: victoria-metrics (InfluxDB v2 write API) and influxd 1.x (v1 /write)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.points import soak_lines
from agent.sink import InfluxConfig, InfluxSink, detect_kind
from controller.store import Store
from tests.cluster import Agents, RedisServer, TimeSeriesServer
from tests.conftest import Vtax
from tests.grafana import dashboard_answers

CPU_SPEC = """\
name: influx
agents: [{name: busy, zone: web}]
conditions: [{name: idle, baseline: true}, {name: loaded}]
workloads: [{kind: cpu, name: burn, agents: [busy], params: {workers: 1, percent: 20}}]
timing: {warmup: 1.5, steady: STEADY, cooldown: 0, lead: 0.3}
repetitions: 1
"""
TAGS = {"run", "trial", "condition", "repetition", "phase", "agent", "host", "zone", "workload", "kind", "role"}


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[TimeSeriesServer]:
    server = TimeSeriesServer(tmp_path, "victoria-metrics").start()
    yield server
    server.stop()


def _stored(vtax: Vtax, run_id: str) -> Counter:
    samples = Store(vtax.store, create=False).samples(run_id)
    return Counter((str(s["trial_idx"]), s["agent"]) for s in samples)


def _run(vtax: Vtax, url: str, steady: float = 2) -> dict:
    done, result = vtax.run_json(
        vtax.spec(CPU_SPEC.replace("STEADY", str(steady))), "--influx", url, "--store", str(vtax.store)
    )
    assert done.returncode in (0, 1), done.stderr
    assert "points written" in done.stdout
    return result


def test_every_sample_arrives_with_its_tags(vtax: Vtax, vm: TimeSeriesServer) -> None:
    result = _run(vtax, vm.url)
    series = vm.export("vtax_sample_achieved_pct")
    assert series and all(set(s["metric"]) >= TAGS for s in series)
    assert {s["metric"]["zone"] for s in series} == {"web"} and {s["metric"]["kind"] for s in series} == {"cpu"}
    arrived = Counter()
    for s in series:
        if s["metric"]["run"] == result["run_id"]:
            arrived[(s["metric"]["trial"], s["metric"]["agent"])] += len(s["values"])
    assert arrived == _stored(vtax, result["run_id"])
    assert {s["metric"]["phase"] for s in series} >= {"warmup", "steady"}
    assert vm.export("vtax_host_cpu_pct") and vm.export("vtax_kpi_mean")
    assert vm.export("vtax_live_achieved_pct")  # the live display's readings, as they happen
    markers = vm.export("vtax_trial_status")
    assert {s["metric"]["event"] for s in markers} == {"start", "end"}


def test_an_outage_mid_run_loses_no_point(vtax: Vtax, vm: TimeSeriesServer) -> None:
    proc = vtax.start("run", str(vtax.spec(CPU_SPEC.replace("STEADY", "8"))), "--influx", vm.url, "--json", "out.json")
    give_up = time.monotonic() + 30
    while not vm.export("vtax_sample_achieved_pct", wait=0):
        assert time.monotonic() < give_up, "no live sample arrived"
        time.sleep(0.2)
    vm.stop()  # points measured now can only go to the spool
    time.sleep(3)
    vm.start()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 1), err
    result = json.loads((vtax.workdir / "out.json").read_text())
    arrived = Counter()
    for s in vm.export("vtax_sample_achieved_pct"):
        arrived[(s["metric"]["trial"], s["metric"]["agent"])] += len(s["values"])
    assert arrived == _stored(vtax, result["run_id"])
    assert not any(vtax.spool.glob("**/*.lp"))


def test_influxdb_1_6_gets_v1_writes_with_microseconds(vtax: Vtax, influxd: TimeSeriesServer) -> None:
    assert detect_kind(InfluxConfig(url=influxd.url)) == "v1"  # 1.6 has no /api/v2/write
    result = _run(vtax, influxd.url)
    reply = influxd.influxql(f"SELECT achieved_pct, agent, phase FROM vtax_sample WHERE run = '{result['run_id']}'")
    rows = reply["results"][0]["series"][0]["values"]
    assert len(rows) == sum(_stored(vtax, result["run_id"]).values())
    stored = {round(s["t"] * 1_000_000) for s in Store(vtax.store, create=False).samples(result["run_id"])}
    assert {row[0] for row in rows} == stored  # precision=u: microseconds survive the round trip


def test_a_rejected_point_is_logged_counted_and_not_retried(tmp_path: Path, influxd: TimeSeriesServer) -> None:
    now = int(time.time() * 1_000_000)
    influxd_line = f'vtax_sample,run=r1,agent=a note="text" {now}'  # `note` is a string field from now on
    sink = InfluxSink(InfluxConfig(url=influxd.url, spool_dir=tmp_path / "spool"))
    sink.submit([influxd_line])
    assert sink.flush(10)
    good = [f"vtax_sample,run=r1,agent=b rps={i}.0 {now + i}" for i in range(1, 6)]
    sink.submit([*good[:2], f"vtax_sample,run=r1,agent=a note=3.0 {now + 10}", *good[2:]])  # type conflict
    assert sink.flush(10)
    time.sleep(1.5)  # several flush periods: nothing is sent again
    stats = sink.stats()
    sink.close()
    assert stats["rejected"] == 1 and stats["spooled_bytes"] == 0
    assert stats["sent"] == 1 + 5  # the first string point and the five good ones, each once
    rows = influxd.influxql("SELECT rps FROM vtax_sample WHERE agent = 'b'")["results"][0]["series"][0]["values"]
    assert len(rows) == 5


def test_secrets_are_never_printed_and_bad_settings_name_the_field(vtax: Vtax, vm: TimeSeriesServer) -> None:
    config = vtax.workdir / "influx.yaml"
    config.write_text(f"url: {vm.url}\ntoken: s3cr3t-token\n")
    done, _ = vtax.run_json(vtax.spec(CPU_SPEC.replace("STEADY", "1")), "--influx-config", str(config))
    assert "s3cr3t" not in done.stdout + done.stderr
    config.write_text("url: http://x\nspool_max_mb: lots\n")
    bad = vtax("run", str(vtax.spec(CPU_SPEC.replace("STEADY", "1"))), "--influx-config", str(config))
    assert bad.returncode == 2 and "influx.yaml: spool_max_mb:" in bad.stderr


def test_the_grafana_dashboards_query_what_a_run_writes(vtax: Vtax, influxd: TimeSeriesServer) -> None:
    """A soak of two segments writes what every panel of a run asks for (host CPU, trial markers, the final
    KPIs), and what the soak row does: each segment's KPIs as stored."""
    soak = CPU_SPEC.replace("timing: {warmup: 1.5, steady: STEADY, cooldown: 0, lead: 0.3}\nrepetitions: 1\n", "")
    soak = soak.replace(
        "conditions: [{name: idle, baseline: true}, {name: loaded}]", "conditions: [{name: idle, baseline: true}]"
    )
    done, result = vtax.run_json(vtax.spec(soak + "soak: {duration: 6, segment: 3}\n"), "--influx", influxd.url)
    assert result is not None and result["soak"]["segments_measured"] == 2, done.stdout + done.stderr
    answered = dashboard_answers(influxd, result["run_id"])
    assert answered["vtax-live.json: Host CPU"]
    assert answered["vtax-live.json: annotation trials"]
    assert answered[
        "vtax-compare.json: KPIs per run, metric and condition (mean, 95 % CI, overhead against the baseline)"
    ]
    assert answered["vtax-live.json: variable run"]
    assert answered["vtax-live.json: Soak: each segment's KPIs (change points and trends annotated)"]
    rows = influxd.influxql(
        f"SELECT value, trial FROM vtax_segment WHERE run = '{result['run_id']}' AND metric = 'burn.achieved_pct'"
    )
    values = [row[1] for row in rows["results"][0]["series"][0]["values"]]
    assert values == [t["kpis"]["burn.achieved_pct"] for t in result["trials"]]  # each segment's KPI, as stored


def test_a_soaks_change_points_and_trends_become_annotations_where_they_start() -> None:
    drift = {
        "segments": [0, 1, 2],
        "change_points": [{"segment": 2, "before": 9.5, "after": 5.1, "pct": -46.3, "p_value": 0.001}],
        "trend": {"verdict": "decreasing", "p_value": 0.0004, "slope_per_h": -0.2, "pct_per_h": -2.1, "n": 3},
    }
    result = {
        "run_id": "r1",
        "trials": [{"idx": i, "start_at": 1_800_000_000.0 + 60 * i} for i in range(3)],
        "soak": {"metrics": {"tcp.throughput_gbps": {"direct": drift}}},
    }
    change, trend = soak_lines(result)
    assert change == (
        "vtax_soak,condition=direct,kind=change_point,metric=tcp.throughput_gbps,run=r1 "
        'title="tcp.throughput_gbps (direct): 9.5 → 5.1 (-46 %)" 1800000120000000'
    )
    assert 'title="tcp.throughput_gbps (direct) decreasing -2.10 %/h (p = 0.0004)" 1800000000000000' in trend


def test_export_backfills_a_run_made_without_influxdb(vtax: Vtax, vm: TimeSeriesServer) -> None:
    done, result = vtax.run_json(vtax.spec(CPU_SPEC.replace("STEADY", "1")))
    assert done.returncode in (0, 1), done.stderr
    exported = vtax("export", result["run_id"], "--influx", vm.url)
    assert exported.returncode == 0, exported.stderr
    arrived = Counter()
    for s in vm.export("vtax_sample_achieved_pct"):
        arrived[(s["metric"]["trial"], s["metric"]["agent"])] += len(s["values"])
    assert arrived == _stored(vtax, result["run_id"])
    assert len(vm.export("vtax_trial_status")) == 4  # start and end of both trials
    assert all(set(s["metric"]) >= TAGS for s in vm.export("vtax_sample_achieved_pct"))  # the same tags as live
    missing = vtax("export", result["run_id"])
    assert missing.returncode == 2 and "--influx" in missing.stderr


def test_distributed_agents_stream_live_with_their_zones(
    vtax: Vtax, vm: TimeSeriesServer, broker: RedisServer, agents: Agents
) -> None:
    env = {"VTAX_INFLUX_URL": vm.url, "VTAX_INFLUX_SPOOL_DIR": str(vtax.workdir / "agent-spool")}
    agents.start("w1", broker, zone="web", env=env)
    agents.start("d1", broker, zone="db", env=env)
    spec = vtax.spec("""\
        name: live
        agents: [{name: w1}, {name: d1}]
        conditions: [{name: only, baseline: true}]
        workloads: [{kind: cpu, name: burn, agents: [w1, d1], params: {workers: 1, percent: 10}}]
        timing: {warmup: 1, steady: 6, cooldown: 0, lead: 0.5}
        repetitions: 1
        """)
    proc = vtax.start("run", str(spec), "--broker", broker.url, "--influx", vm.url, "--json", "out.json")
    seen_live = False
    while proc.poll() is None:
        series = vm.export("vtax_sample_achieved_pct", wait=0)
        if {s["metric"]["agent"] for s in series} == {"w1", "d1"}:
            seen_live = True
            break
        time.sleep(0.3)
    assert seen_live, "samples reached InfluxDB only after the run"
    _, err = proc.communicate(timeout=60)
    result = json.loads((vtax.workdir / "out.json").read_text())
    series = vm.export("vtax_sample_achieved_pct")
    assert {(s["metric"]["agent"], s["metric"]["zone"]) for s in series} == {("w1", "web"), ("d1", "db")}
    arrived = Counter()
    for s in series:
        arrived[(s["metric"]["trial"], s["metric"]["agent"])] += len(s["values"])
    assert arrived == _stored(vtax, result["run_id"]), err
