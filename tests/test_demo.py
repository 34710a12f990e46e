"""`vtax demo`: the first thing a new user runs."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import Vtax


@pytest.mark.slow
def test_demo_shows_the_relays_throughput_overhead_with_its_ci(vtax: Vtax) -> None:
    out = vtax.workdir / "demo.json"
    began = time.monotonic()
    done = vtax("demo", "--json", str(out), timeout=150)
    elapsed = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert elapsed < 90, f"the demo took {elapsed:.0f} s"
    result = json.loads(out.read_text())
    assert result["baseline"] == "direct" and result["conditions"] == ["direct", "relay"]
    relay = result["metrics"]["iperf3.throughput_gbps"]["overhead"]["relay"]
    low, high = relay["ci95_pct"]
    assert low <= relay["pct"] <= high
    assert relay["pct"] < 0, "copying every byte through Python must cost throughput"
    codes = {issue["code"] for issue in result["validity"]}
    assert "host_counters_coarse" not in codes, "1 s host samples fit a 3 s steady phase"
    table_row = next(line for line in done.stdout.splitlines() if "relay" in line and "[" in line and "%" in line)
    assert f"{relay['pct']:+.1f} %" in table_row
    assert f"stored in {vtax.store}" in done.stdout.replace("\n", "")
