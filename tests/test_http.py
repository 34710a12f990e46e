"""HTTP load through locust against vtax's built-in target, in the embedded engine."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.tasks import TASKS, TaskIO
from tests.conftest import Vtax
from workloads.base import RunContext
from workloads.http import _windows

HTTP_SPEC = """\
name: http
agents: [{name: client, locustfiles: LOCUSTFILES}, {name: server}]
conditions:
  - {name: direct, baseline: true}
  - {name: relay, appliance: relay}
workloads:
  - kind: http
    agents: [client]
    server: server
    params: PARAMS
timing: {warmup: 1, steady: 2, cooldown: 0, lead: 0.5}
repetitions: 2
"""


def http_spec(
    params: str = "{scenario: get, object_size: 16k, users: 2, target_server: python}", locustfiles: str = "null"
) -> str:
    return HTTP_SPEC.replace("PARAMS", params).replace("LOCUSTFILES", locustfiles)


def test_http_run_reports_rps_and_merged_percentiles_with_cis(vtax: Vtax) -> None:
    done, result = vtax.run_json(vtax.spec(http_spec()))
    assert done.returncode in (0, 1), done.stderr
    assert [t["status"] for t in result["trials"]] == ["ok"] * 4
    metrics = result["metrics"]
    for name in ("http.rps", "http.latency_p50_ms", "http.latency_p99_ms", "http.latency_p999_ms", "http.failure_pct"):
        described = metrics[name]["by_condition"]["direct"]
        assert described["n"] == 2 and described["ci95"] is not None, name
        assert "relay" in metrics[name]["overhead"]
    direct = {k: metrics[k]["by_condition"]["direct"]["mean"] for k in metrics}
    assert direct["http.rps"] > 100
    assert direct["http.failure_pct"] == 0
    assert direct["http.latency_p50_ms"] <= direct["http.latency_p99_ms"] <= direct["http.latency_p999_ms"]
    # 16 KiB per response: the byte rate and the request rate must agree
    assert direct["http.throughput_gbps"] == pytest.approx(direct["http.rps"] * 16 * 1024 * 8 / 1e9, rel=0.05)
    assert metrics["http.target_cpu_pct"]["by_condition"]["direct"]["mean"] > 0


SERVERS = ["python", pytest.param("nginx", marks=pytest.mark.skipif(shutil.which("nginx") is None, reason="no nginx"))]


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("scenario", ["get", "connections", "upload"])
def test_scenarios_against_both_targets(vtax: Vtax, scenario: str, server: str) -> None:
    params = f"{{scenario: {scenario}, object_size: 1k, users: 2, target_server: {server}}}"
    spec = http_spec(params).replace("repetitions: 2", "repetitions: 1")
    spec = spec.replace("  - {name: relay, appliance: relay}\n", "")
    done, result = vtax.run_json(vtax.spec(spec))
    assert result["trials"][0]["status"] == "ok", done.stderr
    kpis = result["trials"][0]["kpis"]
    assert kpis["http.rps"] > 50 and kpis["http.failure_pct"] == 0


def test_a_custom_locustfile_by_name_from_the_agents_directory(vtax: Vtax, tmp_path: Path) -> None:
    files = tmp_path / "locustfiles"
    files.mkdir()
    (files / "small.py").write_text(
        "from locust import FastHttpUser, constant, task\n\n"
        "class Small(FastHttpUser):\n"
        "    wait_time = constant(0.01)\n\n"
        "    @task\n"
        "    def one(self):\n"
        "        self.client.get('/1k')\n"
    )
    spec = http_spec("{scenario: locustfile, locustfile: small.py, users: 2}", locustfiles=str(files))
    done, result = vtax.run_json(vtax.spec(spec.replace("repetitions: 2", "repetitions: 1")))
    assert [t["status"] for t in result["trials"]] == ["ok", "ok"], done.stderr
    assert result["trials"][0]["kpis"]["http.throughput_gbps"] == pytest.approx(
        result["trials"][0]["kpis"]["http.rps"] * 1024 * 8 / 1e9, rel=0.05
    )


def test_a_path_is_not_a_locustfile_name(vtax: Vtax) -> None:
    done = vtax("validate", str(vtax.spec(http_spec("{scenario: locustfile, locustfile: ../../etc/evil.py}"))))
    assert done.returncode == 2 and "workloads[0].params" in done.stderr and "not a path" in done.stderr


@pytest.mark.parametrize(
    ("directory", "reason"), [(None, "no locustfile directory"), ("elsewhere", "not in this agent")]
)
def test_a_locustfile_outside_the_configured_directory_is_refused(tmp_path: Path, directory: str | None, reason: str):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "outside.py").write_text("raise SystemExit('must never run')\n")
    now = time.time()
    result = TASKS["vtax.run_workload"](
        agent="a",
        workload="http",
        kind="http",
        params={"scenario": "locustfile", "locustfile": "outside.py"},
        target={"host": "127.0.0.1", "port": 9},
        start_at=now,
        duration=1,
        deadline=now + 10,
        io=TaskIO(locustfile_dir=tmp_path / directory if directory else None),
    )
    assert result["status"] == "error" and "refused" in result["reason"] and reason in result["reason"]


SEARCH_SPEC = """\
name: http-search
agents: [{name: client}, {name: server}]
conditions: [{name: direct, baseline: true}]
workloads: [{kind: http, name: web, agents: [client], server: server, params: PARAMS}]
timing: {warmup: 1, steady: 2, cooldown: 0, lead: 0.5}
search: {workload: web, low: LOW, high: HIGH, precision_pct: 10, final_repetitions: 2, criteria: CRITERIA}
"""


def _search_spec(params: str, low: float, high: float) -> str:
    criteria = "{web.failure_pct: {max: 0.001}, web.latency_p99_ms: {max: 1000}}"
    return (
        SEARCH_SPEC.replace("PARAMS", params)
        .replace("LOW", str(low))
        .replace("HIGH", str(high))
        .replace("CRITERIA", criteria)
    )


def test_a_request_rate_search_paces_locust_processes_and_stops_where_locust_itself_is_the_limit(vtax: Vtax) -> None:
    """The search sets the http workload's `rps` (locust's constant_throughput), split over two pinned locust
    processes: at 800 req/s the path carries what is offered (within 5 %), summed into one `rps` with one
    merged latency histogram, and the search ends at its upper bound. Offered 100,000 req/s, one locust
    process (about 9,000 req/s at a full core on this box) falls short with a busy core: generator_limited
    with the rate it reached, not a device capacity."""
    # 20 users: each paced to 40 req/s, so a request may take up to 25 ms (a busy CI box) before the rate falls
    paced = _search_spec("{users: 20, object_size: 1k, processes: 2, affinity: [0, 1]}", 300, 800)
    done, result = vtax.run_json(vtax.spec(paced))
    assert result is not None, done.stderr
    found = result["capacity"]["direct"]
    assert found["stop"] == "above_high" and found["unit"] == "req/s", found
    assert found["achieved"]["mean"] == pytest.approx(800, rel=0.05), found["achieved"]
    assert result["metrics"]["web.latency_p99_ms"]["by_condition"]["direct"]["mean"] > 0
    assert "≥ 800 req/s (passed at the upper bound)" in done.stdout
    flooded = _search_spec("{users: 20, object_size: 1k}", 500, 100000)
    done, result = vtax.run_json(vtax.spec(flooded))
    assert result is not None, done.stderr
    found = result["capacity"]["direct"]
    assert found["stop"] == "generator_limited" and 1000 < found["reached"] < 95_000 and len(found["tried"]) == 1, found
    assert "the generator, not the device, was the limit" in done.stdout
    assert "at least as many users" in vtax("validate", str(vtax.spec(http_spec("{users: 1, processes: 2}")))).stderr


def test_several_generators_seconds_are_taken_together_and_only_those_all_reported() -> None:
    """Two child processes, one reporting a second more than the other: the seconds come in pairs, and the one
    only the first reported is left out rather than counted as a drop in the sum."""

    def child(seconds: int) -> subprocess.Popen[bytes]:
        prints = "; ".join(f"print(json.dumps({{'second': {k}}}), flush=True)" for k in range(seconds))
        return subprocess.Popen([sys.executable, "-c", f"import json; {prints}"], stdout=subprocess.PIPE)

    now = time.time()
    seconds = list(_windows([child(3), child(2)], RunContext(start_at=now, duration=5, deadline=now + 30)))
    assert seconds == [[{"second": 0}, {"second": 0}], [{"second": 1}, {"second": 1}]]
