"""`vtax compare`: two real runs whose specs differ by an injected cost (iperf3 paced at 2 Gbit/s, then at
1 Gbit/s: throughput must come out −50 %), compared on the terminal, in JSON and as an offline page, with the
one spec difference that explains the change."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from controller import stats
from tests.chromium import CHROMIUM, open_page
from tests.conftest import Vtax

BEFORE = """\
name: update
agents: [{name: client}, {name: server}]
conditions: [{name: direct, baseline: true}]
workloads: [{kind: iperf3, name: tcp, agents: [client], server: server, params: {bitrate: 2G}}]
timing: {warmup: 0.5, steady: 2, cooldown: 0, lead: 0.5}
repetitions: 2
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vtax, str, str]]:
    vtax = Vtax(tmp_path_factory.mktemp("compare"))
    ids = []
    for name, text in (("before.yaml", BEFORE), ("after.yaml", BEFORE.replace("bitrate: 2G", "bitrate: 1G"))):
        done, result = vtax.run_json(vtax.spec(text, name))
        assert result is not None, done.stderr
        ids.append(result["run_id"])
    yield vtax, ids[0], ids[1]


def test_the_injected_cost_is_found_with_its_ci_and_explained(two_runs: tuple[Vtax, str, str]) -> None:
    vtax, before, after = two_runs
    done = vtax("compare", before, after, "--json", "c.json", "--html", "c.html")
    assert done.returncode == 0, done.stderr
    comparison = json.loads((vtax.workdir / "c.json").read_text())
    assert (comparison["a"], comparison["b"]) == (before, after)
    throughput = next(c for c in comparison["changes"] if c["metric"] == "tcp.throughput_gbps")
    change = throughput["change"]
    assert throughput["verdict"] == "worse" and change["method"] == "welch"
    assert -52 < change["pct"] < -48 and change["ci95_pct"][0] <= -49 and change["ci95_pct"][1] >= -51
    assert "p_adjusted" in change and change["p_adjusted"] >= change["p_value"]
    keys = {d["key"]: (d["a"], d["b"]) for d in comparison["differences"]}
    assert keys["spec.workloads[0].params.bitrate"] == ("2G", "1G")
    assert not [k for k in keys if k.endswith((".pid", ".started", ".command"))], keys  # volatile, explains nothing
    assert "worse" in done.stdout and "spec.workloads[0].params.bitrate" in done.stdout
    reverse = vtax("compare", after, before, "--json", "r.json")
    again = json.loads((vtax.workdir / "r.json").read_text())
    assert reverse.returncode == 0
    assert next(c for c in again["changes"] if c["metric"] == "tcp.throughput_gbps")["verdict"] == "better"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
def test_the_comparison_page_renders_offline(two_runs: tuple[Vtax, str, str]) -> None:
    vtax, before, after = two_runs
    done = vtax("compare", before, after, "--html", "page.html")
    assert done.returncode == 0, done.stderr
    page = vtax.workdir / "page.html"
    opened = open_page(page, vtax.workdir / "page.png", [".js-plotly-plot", "table"])
    assert opened.errors == []
    assert [url for url in opened.requests if not url.startswith("data:")] == [page.resolve().as_uri()]
    assert opened.counts[".js-plotly-plot"] == 1 and opened.counts["table"] == 2  # changes, differences


def test_what_cannot_be_compared_is_refused_in_one_line(two_runs: tuple[Vtax, str, str]) -> None:
    vtax, before, _ = two_runs
    for args, expected in (
        ((before, before), "two different runs"),
        ((before, "nope"), "no run 'nope'"),
    ):
        done = vtax("compare", *args)
        assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_runs_whose_workloads_differ_are_refused_as_one_study(two_runs: tuple[Vtax, str, str]) -> None:
    """A report puts runs together as one study only when they measure the same thing; these two do not (their
    offered load differs), which `vtax compare` is for."""
    vtax, before, after = two_runs
    refused = vtax("report", before, after, "-o", "both.html")
    assert refused.returncode == 2 and "differ in their spec's `workloads`" in refused.stderr
    assert "vtax compare" in refused.stderr and not (vtax.workdir / "both.html").exists()


def test_plan_takes_the_noise_of_the_last_run_of_the_spec(two_runs: tuple[Vtax, str, str]) -> None:
    """One condition, so the noise is the within-condition variation (the Welch model's coefficient of
    variation); the repetitions are what `stats.repetitions_for` says for that noise, computed here by hand."""
    vtax, before, after = two_runs
    done = vtax("plan", str(vtax.workdir / "before.yaml"), "--detect", "5%", "--json", "plan.json")
    assert done.returncode == 0, done.stderr
    planned = json.loads((vtax.workdir / "plan.json").read_text())
    assert planned["noise_run"] == before and planned["detect_pct"] == 5 and planned["alpha"] == 0.05
    shown = vtax("show", before, "--json", "before.json")
    assert shown.returncode in (0, 1)
    values = np.asarray(
        [t["kpis"]["tcp.throughput_gbps"] for t in json.loads((vtax.workdir / "before.json").read_text())["trials"]]
    )
    cv = float(np.sqrt(((values / values.mean() - 1) ** 2).sum() / (len(values) - 1)))
    row = next(m for m in planned["metrics"] if m["metric"] == "tcp.throughput_gbps")
    assert row["method"] == "welch" and row["noise_pct"] == pytest.approx(100 * cv, rel=1e-6)
    assert row["repetitions"] == stats.repetitions_for(5, max(cv, 1e-12), paired=False)
    assert "repetitions" in done.stdout and "to see 5 %" in done.stdout
    refused = vtax("plan", str(vtax.workdir / "before.yaml"), "--detect", "5%", "--from", after)
    assert refused.returncode == 2 and "differ in their spec's `workloads`" in refused.stderr
    other = vtax.spec(BEFORE.replace("steady: 2", "steady: 9"), "longer.yaml")
    refused = vtax("plan", str(other), "--detect", "5")
    assert refused.returncode == 2 and "no completed run with this spec's workloads and timing" in refused.stderr
    refused = vtax("plan", str(other), "--detect", "five")
    assert refused.returncode == 2 and "expected a percentage" in refused.stderr
