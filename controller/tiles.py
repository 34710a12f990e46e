"""Density search: per condition, how many guest-VM tiles the agents carry while every tile keeps its criteria.

A tile is one guest VM's traffic profile: a copy of each of the spec's tile workloads. The search is the
capacity search's bracket on whole numbers (`Bounds(whole=True)`): the most tiles first, then one, then
halving between the most that passed and the fewest that failed until they are neighbours, then the final
repetitions at the found count. A tile workload's criterion is judged in the worst tile (every VM must keep its
QoS, as VMmark's tiles must), a host criterion on the host.

Where the agents cannot host the spec's most tiles (their task slots, or `per_agent`), the search's upper bound
is what they can host; a condition that passes there is reported as "≥ N (agents exhausted)", never as a limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

from agent.wire import AgentResult
from controller.kpis import trial_kpis
from controller.search import Bounds, Bracket, StopReason, judge
from controller.spec import Criterion, Experiment, TilesSpec
from controller.stats import Description, describe
from controller.store import StoredSample
from controller.topology import Flow, tile_flows


class TileStep(TypedDict):
    """One trial of a tiles search, as kept in the run store's `tiles` note (trial index → step)."""

    condition: str
    tiles: int
    final: bool
    fit: int  # the most tiles the agents could host
    per_tile: dict[str, list[float]]  # each tile workload criterion's value in every tile, tile by tile


def bounds(spec: TilesSpec, fit: int) -> Bounds:
    """From one tile up to the spec's most tiles, or to what the agents can host where that is fewer."""
    return Bounds(
        low=1,
        high=min(spec.max, fit),
        precision_pct=0.0,
        final_repetitions=spec.final_repetitions,
        max_trials=spec.max_trials,
        whole=True,
        exhausted=fit < spec.max,
    )


def tiles_that_fit(
    spec: TilesSpec, base: list[Flow], limit_of: Callable[[str], tuple[str, int] | None], fixed: list[str]
) -> int:
    """The most tiles (up to the spec's `max`) the agents can host: no agent past `per_agent` tiles, no agent
    process past its load task slots (`limit_of(agent)`: its process and slots), `fixed` the tasks that run
    beside the tiles (hypervisor agents')."""
    for tiles in range(1, spec.max + 1):
        flows = tile_flows(base, tiles)
        per_agent: dict[str, set[int | None]] = {}
        per_process: dict[str, int] = {}
        for agent in [flow.client for flow in flows] + fixed:
            limit = limit_of(agent)
            if limit is not None:
                per_process[limit[0]] = per_process.get(limit[0], 0) + 1
                if per_process[limit[0]] > limit[1]:
                    return tiles - 1
        for flow in flows:
            per_agent.setdefault(flow.client, set()).add(flow.tile)
        if spec.per_agent is not None and any(len(held) > spec.per_agent for held in per_agent.values()):
            return tiles - 1
    return spec.max


def per_tile(
    experiment: Experiment,
    criteria: dict[str, Criterion],
    start_at: float,
    flows: list[Flow],
    results: list[AgentResult],
) -> dict[str, list[float]]:
    """Every tile workload criterion's steady-phase value in each tile (the flows' results, in flow order)."""
    samples: dict[int | None, list[StoredSample]] = {}
    for flow, result in zip(flows, results, strict=True):
        samples.setdefault(flow.tile, []).extend(
            {**s, "trial_idx": 0, "agent": result["agent"], "workload": result["workload"]} for s in result["samples"]
        )
    kpis = [trial_kpis(experiment, start_at, tile, []) for tile in samples.values()]
    metrics = [m for m in criteria if not m.startswith("host.")]
    return {metric: [k.get(metric, float("nan")) for k in kpis] for metric in metrics}


def judge_tiles(
    criteria: dict[str, Criterion], status: str, kpis: dict[str, float], values: dict[str, list[float]]
) -> tuple[bool | None, list[str]]:
    """Whether a tiles trial passes: each host criterion on the trial's KPIs, each tile criterion in the worst
    tile (a tile that did not report a value breaks it)."""
    host = {metric: value for metric, value in kpis.items() if metric not in values}
    passed, broken = judge(criteria, status, host | worst_tiles(criteria, values))
    return passed, [f"{b} in the worst tile" if b.partition(" ")[0] in values else b for b in broken]


def worst_tiles(criteria: dict[str, Criterion], values: dict[str, list[float]]) -> dict[str, float]:
    """Each tile criterion's value in the worst tile; left out where a tile measured nothing (NaN), so that
    the criterion reads "not measured"."""
    return {
        metric: _worst(criteria[metric], tiles)
        for metric, tiles in values.items()
        if tiles and all(v == v for v in tiles)
    }


class TriedTiles(TypedDict):
    """One trial of a tiles search."""

    trial: int
    tiles: int
    final: bool
    passed: bool | None
    broken: list[str]
    worst: dict[str, float]  # each tile criterion's value in the worst tile (the load–QoS curve, the knee)


class TileCapacity(TypedDict):
    """A condition's tiles result (the result JSON's `tiles.<condition>`)."""

    value: int | None  # the most tiles with which every trial, the final ones included, kept every criterion
    bracket: list[int | None]  # [that number, the fewest that failed]: the true density lies in between
    stop: StopReason
    finals_passed: int
    worst: dict[str, Description]  # each tile criterion's worst-tile value over the final trials at `value`
    change_pct: list[float] | None  # against the baseline's: [lowest, estimate, highest] the two brackets allow
    tried: list[TriedTiles]


def tile_capacities(
    spec: TilesSpec,
    baseline: str,
    trials: list[dict[str, Any]],
    steps: dict[str, TileStep],
) -> dict[str, TileCapacity]:
    """Every condition's tiles search replayed from its stored trials (in run order)."""
    brackets: dict[str, Bracket] = {}
    tried: dict[str, list[TriedTiles]] = {}
    for trial in trials:
        step = steps.get(str(trial["idx"]))
        if step is None:
            continue
        name = step["condition"]
        passed, broken = judge_tiles(spec.criteria, trial["status"], trial["kpis"], step["per_tile"])
        bracket = brackets.setdefault(name, Bracket(bounds(spec, step["fit"])))
        bracket.record(step["tiles"], step["final"], passed, None)
        tried.setdefault(name, []).append(
            {
                "trial": trial["idx"],
                "tiles": step["tiles"],
                "final": step["final"],
                "passed": passed,
                "broken": broken,
                "worst": worst_tiles(spec.criteria, step["per_tile"]),
            }
        )
    found: dict[str, TileCapacity] = {}
    for name, bracket in brackets.items():
        if bracket.stop is None and bracket.next_step() is not None:
            bracket.stop = "cut_short"
        at_value = [t["worst"] for t in tried[name] if t["final"] and t["passed"] and t["tiles"] == bracket.passed]
        counted = bracket.stop in ("found", "agents_exhausted", "above_high")
        found[name] = {
            "value": _whole(bracket.passed) if counted else None,
            "bracket": [_whole(bracket.passed), _whole(bracket.failed)],
            "stop": bracket.stop or "cut_short",
            "finals_passed": sum(bracket.finals),
            "worst": {
                metric: describe([worst[metric] for worst in at_value if metric in worst])
                for metric in spec.criteria
                if not metric.startswith("host.")
            },
            "change_pct": None,
            "tried": tried[name],
        }
    base = found.get(baseline)
    for name, capacity in found.items():
        if name != baseline and base is not None:
            capacity["change_pct"] = change(base, capacity)
    return found


def change(base: TileCapacity, other: TileCapacity) -> list[float] | None:
    """Tiles against the baseline's, %: the estimate and the range both brackets allow (each true density lies
    in [found, found + 1)); None unless both searches found their limit."""
    if base["stop"] != "found" or other["stop"] != "found" or not base["value"] or other["value"] is None:
        return None
    b, o = base["value"], other["value"]
    return [100 * (o / (b + 1) - 1), 100 * (o / b - 1), 100 * ((o + 1) / b - 1)]


def tiles_text(found: TileCapacity, spec: dict[str, Any]) -> str:
    """A condition's tiles as a person reads them: "14 tiles (15 failed)", or why there is no count."""
    match found["stop"]:
        case "found":
            return f"{found['value']} tiles ({found['bracket'][1]} failed)"
        case "agents_exhausted":
            return f"≥ {found['value']} tiles (agents exhausted)"
        case "above_high":
            return f"≥ {spec['max']} tiles (passed at the most tried)"
        case "below_low":
            return "< 1 tile (one tile already fails)"
        case stop:
            return f"not found: {stop.replace('_', ' ')}"


def _worst(bound: Criterion, values: list[float]) -> float:
    """The tile furthest from passing: the lowest where a minimum is broken or is the only bound, else the
    highest."""
    if bound.min is not None and (min(values) < bound.min or bound.max is None):
        return min(values)
    return max(values)


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)
