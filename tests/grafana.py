"""The shipped Grafana dashboards, asked of a real influxd after a real run."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cluster import TimeSeriesServer

DASHBOARDS = Path(__file__).parent.parent / "deploy" / "grafana" / "dashboards"


def _dashboard_queries() -> list[tuple[str, str]]:
    """(where, InfluxQL) of every query in the shipped Grafana dashboards."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            found += [(f"{path.name}: {panel['title']}", t["query"]) for t in panel["targets"]]
        found += [
            (f"{path.name}: annotation {a['name']}", a["query"]) for a in board.get("annotations", {}).get("list", [])
        ]
        found += [(f"{path.name}: variable {v['name']}", v["query"]) for v in board["templating"]["list"]]
    return found


def dashboard_answers(influxd: TimeSeriesServer, run_id: str) -> dict[str, bool]:
    """Every panel, annotation and variable of the dashboards, with Grafana's macros filled in for `run_id`:
    whether any of its queries found data. A query influxd refuses fails the calling test."""
    answered: dict[str, bool] = {}
    for where, query in _dashboard_queries():
        concrete = (
            query.replace("$timeFilter", "time > now() - 1h")
            .replace("$__interval", "1s")
            .replace("/^$run$/", f"/^{run_id}$/")
            .replace("/^($run)$/", f"/^({run_id})$/")
            .replace("/^($metric)$/", "/.*/")
        )
        reply = influxd.influxql(concrete)["results"][0]
        assert "error" not in reply, f"{where}: {reply.get('error')}"
        answered[where] = answered.get(where, False) or bool(reply.get("series"))
    return answered
