"""`vtax report`: a real run's page opened in headless Chromium: it renders every plot without a JavaScript
error, asks for nothing but itself (no CDN, no font, no network), and says what the statistics say."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import plotly.offline
import pytest

from controller.analysis import analyse_study
from controller.store import Store
from tests.chromium import CHROMIUM, open_page
from tests.conftest import Vtax

THREE = """\
name: three
agents: [{name: client}, {name: server}]
conditions:
  - {name: direct, baseline: true}
  - {name: relay, appliance: relay}
  - {name: relay-again, appliance: relay}
workloads: [{kind: iperf3, name: tcp, agents: [client], server: server}]
timing: {warmup: 0.5, steady: 1.5, cooldown: 0, lead: 0.5}
repetitions: 2
"""


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vtax, dict, Path]]:
    vtax = Vtax(tmp_path_factory.mktemp("report"))
    done, result = vtax.run_json(vtax.spec(THREE))
    assert done.returncode in (0, 1), done.stderr
    made = vtax("report", result["run_id"], "-o", "report.html")
    assert made.returncode == 0, made.stderr
    yield vtax, result, vtax.workdir / "report.html"


def test_the_result_says_how_each_overhead_was_computed(reported: tuple[Vtax, dict, Path]) -> None:
    _, result, _ = reported
    over = result["metrics"]["tcp.throughput_gbps"]["overhead"]
    assert {o["method"] for o in over.values()} == {"paired"} and all(o["n_pairs"] == 2 for o in over.values())
    assert all("p_adjusted" in o and "mde_pct" in o for o in over.values())
    ranked = result["metrics"]["tcp.throughput_gbps"]["ranking"]
    assert sorted(r["condition"] for r in ranked) == ["direct", "relay", "relay-again"]
    assert all(1 <= r["rank_interval"][0] <= r["rank"] <= r["rank_interval"][1] <= 3 for r in ranked)


def test_the_page_holds_everything_it_needs(reported: tuple[Vtax, dict, Path]) -> None:
    _, result, page = reported
    text = page.read_text()
    library = plotly.offline.get_plotlyjs()
    assert text.count(library) == 1  # plotly's JavaScript, inlined once
    own = text.replace(library, "")
    assert result["run_id"] in own and "Verdicts" in own and "Provenance" in own
    assert "<script src=" not in own and "http://" not in own and "https://" not in own and "@import" not in own
    assert "vtax run" in text and result["environment"]["controller"]["kernel"] in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
def test_the_page_renders_offline_in_chromium_without_an_error(reported: tuple[Vtax, dict, Path]) -> None:
    vtax, result, page = reported
    screenshot = vtax.workdir / "report.png"
    opened = open_page(page, screenshot, [".js-plotly-plot", "section.plot", "table"])
    assert opened.errors == []
    fetched = [url for url in opened.requests if not url.startswith("data:")]  # data: URLs are inline
    assert fetched == [page.resolve().as_uri()], "the page asked for more than itself"
    plots = opened.counts["section.plot"]
    assert plots == opened.counts[".js-plotly-plot"] >= 1 + len(result["metrics"])  # forest + one per metric
    assert screenshot.stat().st_size > 20_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_runs_of_one_spec_are_one_study(reported: tuple[Vtax, dict, Path]) -> None:
    """A second run's conditions join the first run's (a repeated name is told apart by its run); within a run
    conditions stay paired, across runs they are compared unpaired; both runs' provenance is on the page."""
    vtax, first, _ = reported
    again = THREE.replace("  - {name: relay-again, appliance: relay}\n", "")
    done, second = vtax.run_json(vtax.spec(again, "again.yaml"))
    assert second is not None, done.stderr
    made = vtax("report", first["run_id"], second["run_id"], "-o", "study.html")
    assert made.returncode == 0, made.stderr
    study, _ = analyse_study(Store(vtax.store, create=False), [first["run_id"], second["run_id"]])
    assert study["conditions"] == ["direct", "relay", "relay-again", "direct (run 2)", "relay (run 2)"]
    over = study["metrics"]["tcp.throughput_gbps"]["overhead"]
    assert over["relay"]["method"] == "paired" and over["relay (run 2)"]["method"] == "welch"
    assert {t["run_id"] for t in study["trials"]} == {first["run_id"], second["run_id"]}
    page = (vtax.workdir / "study.html").read_text()
    assert "a study of 2 runs" in page and f"Run {second['run_id']}" in page and "relay (run 2)" in page
