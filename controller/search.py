"""Capacity search: per condition, the highest offered load at which a trial passes every criterion.

The scheme follows RFC 2544's throughput search and NFVbench's NDR/PDR bisection: the first trial offers the
upper bound (a device that carries it needs no search), then the lower bound, then the bracket between the
highest load that passed and the lowest that failed is halved (geometrically while it spans more than a
factor of 2, so a wide range costs log steps, then arithmetically) until it is narrower than the precision.
The found load is then confirmed, as MLRsearch and FD.io CSIT ask, by `final_repetitions` full trials at it:
if one fails, that load counts as failed and the bisection goes on below it. The final trials give the CI.

NFVbench's rule guards against measuring the generator: a trial that passes its criteria while carrying less
than `achieved_ratio` of what it offered stops the search as `generator_limited`, with the load reached,
instead of reporting a device limit that is really the sender's (`Judge` says when a shortfall is the path's).

`Bracket` is the state of one condition's search; it is replayed from the stored trials for `vtax show`, so
the analysis never depends on what the controller held in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from controller.spec import Criterion, SearchSpec
from controller.stats import Description, Overhead, compare, describe
from controller.validity import Issue, issue
from workloads.http import SATURATED_PCT

StopReason = Literal[
    "found",
    "above_high",
    "agents_exhausted",
    "below_low",
    "generator_limited",
    "max_trials",
    "trial_failed",
    "cut_short",
]


Sender = Literal["udp", "tcp", "http"]
RATE: dict[Sender, tuple[str, str]] = {  # the metric a sender's carried load is read from, and its unit
    "udp": ("throughput_gbps", "Gbit/s"),
    "tcp": ("throughput_gbps", "Gbit/s"),
    "http": ("rps", "req/s"),
}
GENERATOR_BUSY_PCT = SATURATED_PCT  # locust's CPU, % of a core, over which its shortfall is its own


class SearchStep(TypedDict):
    """What one trial of a search offered, as kept in the run store's `search` note (trial index → step)."""

    condition: str
    load: float  # over all the searched workload's flows, in its unit (`RATE`)
    final: bool  # a confirming trial at the found load
    goal: NotRequired[str]  # the goal whose bracket chose the load (absent: the main `criteria`)


@dataclass(frozen=True)
class Bounds:
    """What one search varies between, how finely, and how it confirms: a rate or a whole number of tiles."""

    low: float
    high: float
    precision_pct: float
    final_repetitions: int
    max_trials: int
    whole: bool = False  # whole numbers only (tiles): done once the bracket is two neighbours
    exhausted: bool = False  # `high` is all the agents can host, not the spec's own bound

    @classmethod
    def of(cls, spec: SearchSpec) -> Bounds:
        return cls(spec.low, spec.high, spec.precision_pct, spec.final_repetitions, spec.max_trials)


@dataclass
class Bracket:
    """One condition's search: what passed, what failed, and what to try next."""

    bounds: Bounds
    passed: float | None = None  # the highest load that passed (and was not refuted by a final trial)
    failed: float | None = None  # the lowest load that failed
    passes: list[float] = field(default_factory=list)  # every probe load that passed
    finals: list[bool] = field(default_factory=list)  # the confirming trials at `passed` so far
    tried: int = 0
    stop: StopReason | None = None
    reached: float | None = None  # generator_limited: the load the generator did carry
    achieved_ratio: float = 0.0  # a passing trial carrying less than this share of its load: generator_limited

    @classmethod
    def of(cls, spec: SearchSpec) -> Bracket:
        """A capacity search's bracket, with its generator guard."""
        return cls(Bounds.of(spec), achieved_ratio=spec.achieved_ratio)

    def next_step(self) -> tuple[float, bool] | None:
        """The next load to offer and whether it is a final (confirming) trial; None once the search is over."""
        bounds = self.bounds
        if self.stop is not None:
            return None
        if self.tried >= bounds.max_trials:
            self.stop = "max_trials"
            return None
        if self.passed is None and self.failed is None:
            return bounds.high, False
        if self.passed is None:
            if self.failed is not None and self.failed <= bounds.low:
                self.stop = "below_low"
                return None
            return bounds.low, False
        if self.failed is not None and not self._narrow(self.passed, self.failed):
            ratio = self.failed / self.passed
            middle = math.sqrt(self.passed * self.failed) if ratio > 2 else (self.passed + self.failed) / 2
            return (min(max(round(middle), self.passed + 1), self.failed - 1) if bounds.whole else middle), False
        if len(self.finals) < bounds.final_repetitions:
            return self.passed, True
        if self.failed is not None:
            self.stop = "found"
        else:
            self.stop = "agents_exhausted" if bounds.exhausted else "above_high"
        return None

    def would_probe(self, load: float) -> bool:
        """Whether another goal's trial at `load` is a probe this bracket's bisection could have chosen: inside
        the bracket while it is still wider than asked, before its final trials."""
        if self.stop is not None or self.finals:
            return False
        if (self.passed is not None and load <= self.passed) or (self.failed is not None and load >= self.failed):
            return False
        return self.passed is None or self.failed is None or not self._narrow(self.passed, self.failed)

    def _narrow(self, passed: float, failed: float) -> bool:
        """Whether the bracket is as narrow as asked: neighbours for whole numbers, else within the precision."""
        if self.bounds.whole:
            return failed - passed <= 1
        return failed / passed - 1 <= self.bounds.precision_pct / 100

    def record(self, load: float, final: bool, passed: bool | None, achieved: float | None) -> None:
        """A trial's outcome: `passed` None when the trial itself failed (not judged); `achieved` the load it
        carried."""
        self.tried += 1
        if passed is None:
            self.stop = "trial_failed"
            return
        if passed and achieved is not None and achieved < self.achieved_ratio * load:
            self.stop, self.reached = "generator_limited", achieved
            return
        if final:
            self.finals.append(passed)
            if not passed:  # refuted: this load fails after all, bisect again below it
                self.failed = load
                self.passes = [p for p in self.passes if p < load]
                self.passed = max(self.passes, default=None)
                self.finals = []
            return
        if passed:
            self.passes.append(load)
            self.passed = max(self.passed or 0.0, load)
        else:
            self.failed = load if self.failed is None else min(self.failed, load)


def judge(criteria: dict[str, Criterion], status: str, kpis: dict[str, float]) -> tuple[bool | None, list[str]]:
    """Whether a trial passes: None (not judged) when the trial did not run as planned; else pass/fail with
    the criteria it broke, each as `metric value (bound)`."""
    if status != "ok":
        return None, [f"trial {status}"]
    broken = []
    for metric, bound in criteria.items():
        value = kpis.get(metric)
        if value is None:
            broken.append(f"{metric} not measured")
        elif bound.min is not None and value < bound.min:
            broken.append(f"{metric} {value:.4g} (min {bound.min:g})")
        elif bound.max is not None and value > bound.max:
            broken.append(f"{metric} {value:.4g} (max {bound.max:g})")
    return not broken, broken


Verdict = tuple[bool | None, list[str], float | None]  # passed (None: not judged), what broke, load carried


@dataclass
class Judge:
    """Judges a search's trials, across all its conditions, in run order (the controller as they end, the
    replay in the same order, so both reach the same verdicts).

    A TCP sender backs off when the path cannot carry more, so TCP carrying less than `achieved_ratio` of its
    offered load is the path's limit: the trial fails. So is an HTTP generator's shortfall, unless locust used
    a whole core: then the generator is the limit (generator_limited). A UDP sender's shortfall without loss is
    NFVbench's generator limit (`Bracket.record` stops the search), unless an earlier trial (of any condition, typically
    the baseline's first at the upper bound) shows the generator sends more: that load, or clearly more than
    this trial carried. Then the path pushed back, as a full NIC queue or a shaper on a veth path does (measured
    in the lab: tbf at 500 Mbit/s held a UDP sender offered 566 Mbit/s to 505 Mbit/s), or the device took the
    generator's CPU (1,000 nftables rules in the lab's shared kernel: 0.35 Gbit/s sent by a sender that had
    sent 1.3 through the plain path)."""

    spec: SearchSpec
    sender: Sender
    criteria: dict[str, Criterion] | None = None  # a further goal's; default the spec's `criteria`
    shown: float = 0.0  # the most the searched workload has carried in any trial so far

    def __call__(self, status: str, kpis: dict[str, float], load: float) -> Verdict:
        """A trial: passed (None: not judged), the criteria it broke, and the load it carried."""
        passed, broken = judge(self.spec.criteria if self.criteria is None else self.criteria, status, kpis)
        metric, unit = RATE[self.sender]
        achieved = kpis.get(f"{self.spec.workload}.{metric}")
        ratio = self.spec.achieved_ratio
        if passed and achieved is not None and achieved < ratio * load:
            carried = f"carried {achieved:.4g} of {load:.4g} {unit} offered"
            busy = kpis.get(f"{self.spec.workload}.generator_cpu_pct", 0.0) >= GENERATOR_BUSY_PCT
            if self.sender == "tcp" or (self.sender == "http" and not busy):
                passed, broken = False, [carried]
            elif self.sender == "udp" and (self.shown >= ratio * load or self.shown * ratio > achieved):
                passed, broken = (
                    False,
                    [f"{carried}; the generator sent {self.shown:.4g} in an earlier trial, so the path held it back"],
                )
        if achieved is not None and status == "ok":
            self.shown = max(self.shown, achieved)
        return passed, broken, achieved


MAIN = "criteria"  # the main goal: the spec's `criteria`; further goals are named in `goals`


def judges(spec: SearchSpec, sender: Sender) -> dict[str, Judge]:
    """One judge per goal, the main criteria first."""
    further = {goal: Judge(spec, sender, criteria) for goal, criteria in spec.goals.items()}
    return {MAIN: Judge(spec, sender), **further}


class Stepper(Protocol):
    """A search that says what to try next (a `Bracket`, a `GoalSearch`)."""

    def next_step(self) -> tuple[float, bool] | None: ...


@dataclass
class GoalSearch:
    """One condition's search for all its goals at once, as MLRsearch finds NDR and PDR in one search: the main
    criteria's bracket first, then each further goal's, and every trial informs every goal whose bisection
    could have chosen its load (`Bracket.would_probe`), so a stricter goal starts from what the looser one
    already learnt."""

    brackets: dict[str, Bracket]
    current: str = MAIN  # the goal whose bracket chose the latest step

    @classmethod
    def of(cls, spec: SearchSpec) -> GoalSearch:
        return cls({goal: Bracket.of(spec) for goal in (MAIN, *spec.goals)})

    def next_step(self) -> tuple[float, bool] | None:
        for goal, bracket in self.brackets.items():
            if (step := bracket.next_step()) is not None:
                self.current = goal
                return step
        return None

    def record(self, load: float, final: bool, verdicts: dict[str, Verdict]) -> list[str]:
        """A trial of the current goal's step, with each goal's `Judge` verdict; returns the goals it informed."""
        took = [goal for goal, b in self.brackets.items() if goal == self.current or b.would_probe(load)]
        for goal in took:
            passed, _, achieved = verdicts[goal]
            self.brackets[goal].record(load, final and goal == self.current, passed, achieved)
        return took


def per_stream_bitrate(load_gbps: float, flows: int, streams: int) -> str:
    """iperf3's `-b` for one stream of one of `flows` flows (`streams`: per flow, over all its processes), so
    that all of them together offer `load_gbps`."""
    return f"{load_gbps * 1e9 / (flows * streams):.0f}"


def expected_trials(bounds: Bounds) -> int:
    """Trials one condition's search takes when no final trial refutes its load: the two bounds, the halvings
    (geometric down to a factor of 2, then arithmetic down to the precision; whole numbers: down to
    neighbours), and the final repetitions."""
    ratio = bounds.high / bounds.low
    geometric = math.ceil(math.log2(math.log2(ratio))) if ratio > 2 else 0
    finest = 2 / bounds.high if bounds.whole else bounds.precision_pct / 100  # neighbours at worst near high/2
    halvings = geometric + max(0, math.ceil(math.log2(min(1.0, ratio - 1) / finest)))
    return min(bounds.max_trials, 2 + halvings + bounds.final_repetitions)


def expected_search_trials(spec: SearchSpec) -> int:
    """Trials one condition's capacity search takes, roughly: the main goal's, and for each further goal its own
    halvings and finals (the bounds it shares with the main goal)."""
    each = expected_trials(Bounds.of(spec))
    return each + len(spec.goals) * max(0, each - 2)


class TriedLoad(TypedDict):
    """One trial of a search, for the load–KPI curve (the knee)."""

    trial: int
    load: float
    final: bool
    passed: bool | None
    broken: list[str]  # the criteria it broke
    achieved: float | None  # the load carried


class Capacity(TypedDict):
    """A condition's search result (the result JSON's `capacity.<condition>`)."""

    value: float | None  # the highest offered load that passed every criterion and its final trials
    unit: str  # Gbit/s (iperf3) or req/s (http)
    bracket: list[float | None]  # [that load, the lowest that failed]
    stop: StopReason
    reached: float | None  # generator_limited: what the generator carried
    finals_passed: int
    achieved: Description  # the load carried in the final trials at `value`
    overhead: Overhead | None  # the achieved load against the baseline's at its capacity (Welch)
    tried: list[TriedLoad]
    goals: dict[str, Capacity]  # each further goal's result, found in the same search


def capacities(
    spec: SearchSpec, sender: Sender, baseline: str, trials: list[dict[str, Any]], steps: dict[str, SearchStep]
) -> dict[str, Capacity]:
    """Every condition's search replayed from its stored trials (in run order) and their KPIs."""
    searches: dict[str, GoalSearch] = {}
    tried: dict[str, dict[str, list[TriedLoad]]] = {}
    judged = judges(spec, sender)
    for trial in trials:
        step = steps.get(str(trial["idx"]))
        if step is None:
            continue
        name, load = step["condition"], step["load"]
        search = searches.setdefault(name, GoalSearch.of(spec))
        search.current = step.get("goal", MAIN)
        verdicts = {goal: judge(trial["status"], trial["kpis"], load) for goal, judge in judged.items()}
        for goal in search.record(load, step["final"], verdicts):
            passed, broken, achieved = verdicts[goal]
            final = step["final"] and goal == search.current
            tried.setdefault(name, {}).setdefault(goal, []).append(
                {
                    "trial": trial["idx"],
                    "load": load,
                    "final": final,
                    "passed": passed,
                    "broken": broken,
                    "achieved": achieved,
                }
            )
    unit = RATE[sender][1]
    found: dict[str, Capacity] = {}
    for name, search in searches.items():
        each = {goal: _capacity(b, tried[name].get(goal, []), unit) for goal, b in search.brackets.items()}
        found[name] = {**each[MAIN], "goals": {goal: each[goal] for goal in spec.goals}}
    for goal in (MAIN, *spec.goals):
        base = _goal(found.get(baseline), goal)
        for name, capacity in found.items():
            other = _goal(capacity, goal)
            if (
                name != baseline
                and base is not None
                and other is not None
                and base["achieved"]["n"]
                and other["achieved"]["n"]
            ):
                other["overhead"] = compare(
                    dict(enumerate(base["achieved"]["values"])),
                    dict(enumerate(other["achieved"]["values"])),
                    blocked_by_repetition=False,
                )
    return found


def _goal(capacity: Capacity | None, goal: str) -> Capacity | None:
    if capacity is None:
        return None
    return capacity if goal == MAIN else capacity["goals"].get(goal)


def _capacity(bracket: Bracket, tried: list[TriedLoad], unit: str) -> Capacity:
    """One goal's result from its replayed bracket and the trials that informed it."""
    if bracket.stop is None and bracket.next_step() is not None:
        bracket.stop = "cut_short"  # the run ended (aborted, interrupted) before this search did
    at_value = [
        t["achieved"]
        for t in tried
        if t["final"] and t["load"] == bracket.passed and t["passed"] and t["achieved"] is not None
    ]
    return {
        "value": bracket.passed if bracket.stop in ("found", "above_high") else None,
        "unit": unit,
        "bracket": [bracket.passed, bracket.failed],
        "stop": bracket.stop or "cut_short",
        "reached": bracket.reached,
        "finals_passed": sum(bracket.finals),
        "achieved": describe(at_value),
        "overhead": None,
        "tried": tried,
        "goals": {},
    }


BED_SHARE = 0.9  # a capacity this close to the bed's own may be the bed's limit (RFC 9411's reference test)


def bed_issues(found: dict[str, Capacity], bed: float, calibration: str) -> list[Issue]:
    """A warning for each condition whose capacity is within `BED_SHARE` of what the bed itself carries
    (`bed`, in the capacity's unit, measured by the calibration run `calibration`): that may be the bed's
    limit."""
    return [
        issue(
            "warning",
            "bed_limit",
            f"condition {name}: capacity {capacity['value']:.4g} {capacity['unit']} is "
            f"{100 * capacity['value'] / bed:.0f} % of the {bed:.4g} the bed carries without the device (calibration "
            f"{calibration}): the bed, not the device, may be the limit",
        )
        for name, capacity in found.items()
        if capacity["value"] is not None and capacity["value"] >= BED_SHARE * bed
    ]


def capacity_text(found: Capacity, spec: dict[str, Any]) -> str:
    """A condition's capacity as a person reads it: the value and its bracket, or why there is none."""
    low, high = found["bracket"]
    unit = found["unit"]
    match found["stop"]:
        case "found":
            return f"{found['value']:.4g} {unit} [{low:.4g}, {high:.4g}]"
        case "above_high":
            return f"≥ {spec['high']:g} {unit} (passed at the upper bound)"
        case "below_low":
            return f"< {spec['low']:g} {unit} (failed at the lower bound)"
        case "generator_limited":
            return f"≥ {found['reached']:.4g} {unit}: the generator, not the device, was the limit"
        case _:
            where = f" (last bracket [{_short(low)}, {_short(high)}])" if low is not None or high is not None else ""
            return f"not found: {found['stop'].replace('_', ' ')}{where}"


def _short(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"
