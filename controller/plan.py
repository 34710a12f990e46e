"""The plan: every condition × repetition as a trial, in the order the spec asks for.

Interleaving (ABAB…) is the default because it spreads slow drift of the machine (thermal, background
jobs, a neighbour's load) over all conditions instead of charging it to one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from controller.search import expected_search_trials, expected_trials
from controller.spec import Experiment
from controller.tiles import bounds


@dataclass(frozen=True, kw_only=True)
class Trial:
    index: int  # position in the run, from 0
    condition: str
    repetition: int  # from 1; in a search, the condition's step
    load: float | None = None  # a search's offered load over the searched workload's flows, in `unit`
    unit: str = "Gbit/s"  # of `load`: Gbit/s (iperf3) or req/s (http)
    final: bool = False  # a search's confirming trial at the found load (or number of tiles)
    tiles: int | None = None  # a tiles search's number of tiles
    bracket: tuple[float | None, float | None] | None = None  # a search's most that passed, least that failed
    goal: str = ""  # a search's further goal (`search.goals`) this trial's load was chosen for
    segment: int | None = None  # a soak's segment number, from 0 over the whole soak
    segments: int = 0  # a soak's number of segments

    @property
    def label(self) -> str:
        """How the display names it: `vendor-a #2`, in a search `vendor-a @ 4.75 Gbit/s [4.5, 5]` (the bracket so
        far), in a tiles search `vendor-a × 6 tiles [4, 8]`."""
        final = (f" {self.goal}" if self.goal else "") + (" (final)" if self.final else "")
        if self.bracket is not None:
            final += " [" + ", ".join("–" if v is None else f"{v:.4g}" for v in self.bracket) + "]"
        if self.segment is not None:
            return f"{self.condition} segment {self.segment + 1}/{self.segments}"
        if self.tiles is not None:
            return f"{self.condition} × {self.tiles} tile{'s' if self.tiles != 1 else ''}{final}"
        if self.load is None:
            return f"{self.condition} #{self.repetition}"
        return f"{self.condition} @ {self.load:.4g} {self.unit}{final}"


def make_plan(experiment: Experiment) -> list[Trial]:
    names = [c.name for c in experiment.conditions]
    reps = range(1, experiment.repetitions + 1)
    if experiment.order == "blocked":
        pairs = [(name, rep) for name in names for rep in reps]
    else:
        shuffler = random.Random(experiment.seed)
        pairs = []
        for rep in reps:
            block = list(names)
            if experiment.order == "random":
                shuffler.shuffle(block)
            pairs += [(name, rep) for name in block]
    return [Trial(index=i, condition=name, repetition=rep) for i, (name, rep) in enumerate(pairs)]


def soak_plan(experiment: Experiment) -> list[Trial]:
    """A soak's segments, each a trial: its conditions in turn, `rotate` segments each, so every condition gets
    the same share of the hours and of their drift."""
    assert experiment.soak is not None
    soak = experiment.soak
    held = soak.conditions or [experiment.baseline.name]
    counts: dict[str, int] = {}
    trials = []
    for segment in range(soak.segments):
        condition = held[(segment // soak.rotate) % len(held)]
        counts[condition] = counts.get(condition, 0) + 1
        trials.append(
            Trial(
                index=segment,
                condition=condition,
                repetition=counts[condition],
                segment=segment,
                segments=soak.segments,
            )
        )
    return trials


@dataclass(frozen=True)
class SearchLength:
    """How many trials one condition spends in one of a spec's searches."""

    what: str  # "a capacity search", "a tiles search up to 16"
    expected: int  # when no final trial refutes its value
    most: int  # its max_trials (per goal)


def search_lengths(experiment: Experiment) -> list[SearchLength]:
    """The searches a spec runs, in run order, with the trials each takes per condition."""
    lengths = []
    if experiment.search is not None:
        search = experiment.search
        most = search.max_trials * (1 + len(search.goals))
        lengths.append(SearchLength("a capacity search", expected_search_trials(search), most))
    if experiment.tiles is not None:
        tiles = bounds(experiment.tiles, experiment.tiles.max)
        lengths.append(
            SearchLength(f"a tiles search up to {experiment.tiles.max}", expected_trials(tiles), tiles.max_trials)
        )
    return lengths


def search_plan(experiment: Experiment) -> list[Trial]:
    """A search has no plan; the trials it is expected to take stand for one (the display's total)."""
    each = sum(length.expected for length in search_lengths(experiment))
    names = [c.name for c in experiment.conditions]
    return [Trial(index=i, condition=names[i % len(names)], repetition=0) for i in range(each * len(names))]
