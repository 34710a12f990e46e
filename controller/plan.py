"""The plan: every condition × repetition as a trial, in the order the spec asks for.

Interleaving (ABAB…) is the default because it spreads slow drift of the machine (thermal, background
jobs, a neighbour's load) over all conditions instead of charging it to one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from controller.spec import Experiment


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

    @property
    def label(self) -> str:
        """How the display names it: `vendor-a #2`, in a search `vendor-a @ 4.75 Gbit/s [4.5, 5]` (the bracket so
        far), in a tiles search `vendor-a × 6 tiles [4, 8]`."""
        final = (f" {self.goal}" if self.goal else "") + (" (final)" if self.final else "")
        if self.bracket is not None:
            final += " [" + ", ".join("–" if v is None else f"{v:.4g}" for v in self.bracket) + "]"
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
