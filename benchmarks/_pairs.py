"""Interleaved bare-vs-vtax pairs and their ratio summary, shared by the fidelity benchmarks."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any, TypeVar

from controller.stats import geometric_mean_ci

T = TypeVar("T")
U = TypeVar("U")


def interleaved(
    pairs: int, bare: Callable[[], T], vtax: Callable[[], U], log: Callable[[int, T, U], None]
) -> tuple[list[T], list[U]]:
    """Run `pairs` bare/vtax pairs, alternating which goes first so slow drift cancels."""
    bares: list[T] = []
    vtaxes: list[U] = []
    for i in range(pairs):
        for side in ("bare", "vtax") if i % 2 == 0 else ("vtax", "bare"):
            if side == "bare":
                bares.append(bare())
            else:
                vtaxes.append(vtax())
        log(i, bares[-1], vtaxes[-1])
    return bares, vtaxes


def ratio_summary(bare: list[float], vtax: list[float], goal: float) -> dict[str, Any]:
    """vtax/bare per pair, their median (judged against `goal`) and geometric mean with its 95 % CI."""
    ratios = [v / b for v, b in zip(vtax, bare, strict=True)]
    median = statistics.median(ratios)
    mean, ci = geometric_mean_ci(ratios)
    return {
        "ratios": [round(x, 4) for x in ratios],
        "median_ratio": round(median, 4),
        "geomean_ratio": round(mean, 4),
        "geomean_ratio_ci95": [round(x, 4) for x in ci or []],
        "goal": goal,
        "meets_goal": median >= goal,
    }
