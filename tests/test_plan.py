"""The plan's trial order."""

from __future__ import annotations

from controller.plan import make_plan
from controller.spec import parse

SPEC = """\
name: order
agents: [{name: a}]
conditions: [{name: A, baseline: true}, {name: B}, {name: C}]
workloads: [{kind: cpu, agents: [a]}]
repetitions: 3
"""


def _order(extra: str) -> list[tuple[str, int]]:
    return [(t.condition, t.repetition) for t in make_plan(parse(SPEC + extra))]


def test_interleaved_is_the_default() -> None:
    assert [c for c, _ in _order("")] == list("ABCABCABC")
    assert [r for _, r in _order("")] == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_blocked() -> None:
    assert [c for c, _ in _order("order: blocked\n")] == list("AAABBBCCC")


def test_random_is_balanced_per_repetition_and_reproducible() -> None:
    first = _order("order: random\nseed: 4\n")
    assert first == _order("order: random\nseed: 4\n")
    assert first != _order("order: random\nseed: 5\n") or first != _order("order: random\nseed: 6\n")
    for rep in (1, 2, 3):
        assert sorted(c for c, r in first if r == rep) == ["A", "B", "C"]
