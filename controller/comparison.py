"""`vtax compare RUN_A RUN_B`: what changed from one run of a spec to another (before and after a software
update, two test beds), each metric under each condition with its CI, and what differs in how the two runs
were made (spec, machines, versions, vSphere placement), so that a change can be explained.

Two runs share no block (they ran at different times), so each change is unpaired: Welch on the log scale
where the values allow it, as for any unblocked comparison in `controller.stats`. Every change also gets a
Holm-adjusted p-value over all the changes compared, and the verdict goes by that one.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from controller import stats
from controller.analysis import analyse_values
from controller.errors import InputError
from controller.store import Store

# what differs in every run and explains nothing: an agent's process id and start time, the command line
VOLATILE = {"pid", "started", "command"}

Verdict = Literal["worse", "better", "no change detected", "not measured"]


class Change(TypedDict):
    """One metric under one condition, run B against run A."""

    metric: str
    unit: str
    better: str
    condition: str
    a: stats.Description
    b: stats.Description
    change: stats.Overhead  # b against a; its p_adjusted is Holm over every change of the comparison
    verdict: Verdict


class Difference(TypedDict):
    """One provenance item that differs: `key` is a dotted path into the run's spec or environment."""

    key: str
    a: str | None
    b: str | None


class RunComparison(TypedDict):
    """`vtax compare --json`: the two runs, every change and every provenance difference."""

    a: str
    b: str
    name_a: str
    name_b: str
    changes: list[Change]
    differences: list[Difference]
    unmatched: list[str]  # metric · condition measured in one run only


def compare_runs(store: Store, run_a: str, run_b: str) -> RunComparison:
    """Run B against run A, metric by metric and condition by condition, and how they were made."""
    result_a, values_a = analyse_values(store, run_a)
    result_b, values_b = analyse_values(store, run_b)
    if result_a["run_id"] == result_b["run_id"]:
        raise InputError(f"compare needs two different runs; both are {result_a['run_id']}")
    changes: list[Change] = []
    unmatched: list[str] = []
    for name, metric in result_a["metrics"].items():
        for condition in result_a["conditions"]:
            if condition not in result_b["conditions"] or name not in result_b["metrics"]:
                unmatched.append(f"{name} · {condition}")
                continue
            change = stats.compare(
                values_a[name].get(condition, {}), values_b[name].get(condition, {}), blocked_by_repetition=False
            )
            changes.append(
                {
                    "metric": name,
                    "unit": metric["unit"],
                    "better": metric["better"],
                    "condition": condition,
                    "a": metric["by_condition"][condition],
                    "b": result_b["metrics"][name]["by_condition"][condition],
                    "change": change,
                    "verdict": "not measured",
                }
            )
    for name in result_b["metrics"]:
        unmatched += [
            f"{name} · {c}"
            for c in result_b["conditions"]
            if c not in result_a["conditions"] or name not in result_a["metrics"]
        ]
    if not changes:
        raise InputError(
            f"runs {result_a['run_id']} and {result_b['run_id']} have no metric under a condition of the same name "
            "in common: there is nothing to compare"
        )
    adjusted = stats.holm([c["change"]["p_value"] for c in changes])
    for change, p_adjusted in zip(changes, adjusted, strict=True):
        change["change"]["p_adjusted"] = p_adjusted
        change["verdict"] = _verdict(change)
    return {
        "a": result_a["run_id"],
        "b": result_b["run_id"],
        "name_a": result_a["name"],
        "name_b": result_b["name"],
        "changes": changes,
        "differences": provenance_differences(result_a, result_b),
        "unmatched": unmatched,
    }


def _verdict(change: Change) -> Verdict:
    over = change["change"]
    if over["delta"] is None:  # a run without a value under this condition
        return "not measured"
    if not stats.significant(over):
        return "no change detected"
    higher = over["delta"] > 0
    return "better" if higher == (change["better"] == "higher") else "worse"


def provenance_differences(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    """Every item of the spec, the environment (controller and agents) and the vSphere placement whose value
    differs between two results, by dotted path; items only one run has show None on the other side."""
    flat_a, flat_b = _provenance(a), _provenance(b)
    return [
        {"key": key, "a": flat_a.get(key), "b": flat_b.get(key)}
        for key in sorted(set(flat_a) | set(flat_b))
        if flat_a.get(key) != flat_b.get(key)
    ]


def _provenance(result: dict[str, Any]) -> dict[str, str]:
    flat: dict[str, str] = {"engine": str(result["engine"])}
    _flatten("spec", result["spec"], flat)
    _flatten("environment", result.get("environment") or {}, flat)
    _flatten("vsphere", result.get("vsphere") or {}, flat)
    return flat


def _flatten(prefix: str, value: object, into: dict[str, str]) -> None:
    """Nested dicts and lists as `a.b[0].c` → the leaf's text (lists of plain values stay one item)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key not in VOLATILE:
                _flatten(f"{prefix}.{key}", inner, into)
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        for index, inner in enumerate(value):
            _flatten(f"{prefix}[{index}]", inner, into)
    elif value is not None:
        into[prefix] = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
