"""Paired against Welch on one stored run: how much the blocked analysis narrows each overhead's CI.

A run whose repetitions ran side by side (interleaved or random order) is analysed paired by repetition; this
recomputes every overhead both ways from the same trial values and prints one JSON object: per metric and
condition, the paired and the Welch change with CI and MDE, and the ratio of the CI widths (Welch / paired;
above 1: pairing helped). Run on a real run, e.g. of examples/vendors.yaml in the lab:

    .venv/bin/python benchmarks/paired_vs_welch.py RUN [--store vtax.db] [--metric tcp.throughput_gbps]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from controller import stats
from controller.analysis import analyse_values
from controller.store import DEFAULT_PATH, Store


def _width(over: stats.Overhead) -> float | None:
    ci = over["ci95_pct"]
    return None if ci is None else ci[1] - ci[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run id or unique prefix")
    parser.add_argument("--store", default=str(DEFAULT_PATH))
    parser.add_argument("--metric", action="append", help="only these metrics (default: all)")
    args = parser.parse_args()
    result, values = analyse_values(Store(Path(args.store), create=False), args.run)
    rows = []
    for name, by_condition in values.items():
        if args.metric and name not in args.metric:
            continue
        for condition in result["conditions"]:
            if condition == result["baseline"]:
                continue
            base, cond = by_condition.get(result["baseline"], {}), by_condition.get(condition, {})
            paired = stats.compare(base, cond, blocked_by_repetition=True)
            welch = stats.compare(base, cond, blocked_by_repetition=False)
            widths = _width(paired), _width(welch)
            rows.append(
                {
                    "metric": name,
                    "condition": condition,
                    "paired": {k: paired[k] for k in ("pct", "ci95_pct", "p_value", "mde_pct")},
                    "welch": {k: welch[k] for k in ("pct", "ci95_pct", "p_value", "mde_pct")},
                    "width_ratio_welch_to_paired": widths[1] / widths[0] if widths[0] and widths[1] else None,
                }
            )
    print(json.dumps({"run": result["run_id"], "order": result["spec"].get("order"), "overheads": rows}, indent=2))


if __name__ == "__main__":
    main()
