"""Interleaved bare-vs-vtax pairs until their ratio is known well enough, and its summary; shared by the fidelity
benchmarks. On a shared box single pairs vary by tens of per cent, so a fixed handful of pairs cannot settle a
2 % goal: pairs are added until the ratio's 95 % CI is that narrow, or a cap is reached and the result is said to
be unresolved."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any, TypeVar

from controller.stats import geometric_mean_ci

T = TypeVar("T")
U = TypeVar("U")

RESOLUTION = 0.02  # the ratio's 95 % CI half-width that settles a 2 % goal
MIN_PAIRS, MAX_PAIRS = 5, 40


def add_pair_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-pairs", type=int, default=MIN_PAIRS, help=f"pairs before stopping (≥ {MIN_PAIRS})")
    parser.add_argument("--max-pairs", type=int, default=MAX_PAIRS, help="give up as unresolved after this many")
    parser.add_argument("--resolution", type=float, default=RESOLUTION, help="stop at this CI half-width of the ratio")


def check_pair_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.min_pairs < MIN_PAIRS:
        parser.error(f"--min-pairs must be at least {MIN_PAIRS} (got {args.min_pairs}): fewer give no usable CI")
    if args.max_pairs < args.min_pairs:
        parser.error(f"--max-pairs ({args.max_pairs}) must be at least --min-pairs ({args.min_pairs})")


def _half_width(ratios: list[float]) -> float | None:
    _, ci = geometric_mean_ci(ratios)
    return None if ci is None else (ci[1] - ci[0]) / 2


def interleaved(
    bare: Callable[[], T],
    vtax: Callable[[], U],
    value: Callable[[T, U], tuple[float, float]],
    log: Callable[[int, T, U, float | None], None],
    *,
    min_pairs: int,
    max_pairs: int,
    resolution: float,
) -> tuple[list[T], list[U]]:
    """Bare/vtax pairs, alternating which goes first so slow drift cancels, until the vtax/bare ratio's 95 % CI
    half-width is at most `resolution` (after `min_pairs`), or `max_pairs` were run. `value` gives a pair's two
    comparable numbers; `log` hears each pair with the half-width so far."""
    bares: list[T] = []
    vtaxes: list[U] = []
    ratios: list[float] = []
    for i in range(max_pairs):
        for side in ("bare", "vtax") if i % 2 == 0 else ("vtax", "bare"):
            if side == "bare":
                bares.append(bare())
            else:
                vtaxes.append(vtax())
        b, v = value(bares[-1], vtaxes[-1])
        ratios.append(v / b)
        half = _half_width(ratios) if len(ratios) >= 2 else None
        log(i, bares[-1], vtaxes[-1], half)
        if i + 1 >= min_pairs and half is not None and half <= resolution:
            break
    return bares, vtaxes


def ratio_summary(bare: list[float], vtax: list[float], goal: float, resolution: float) -> dict[str, Any]:
    """vtax/bare per pair, their median and geometric mean with its 95 % CI, and the verdict against `goal`: only
    once the CI is at most ±`resolution` wide; "unresolved" otherwise."""
    ratios = [v / b for v, b in zip(vtax, bare, strict=True)]
    median = statistics.median(ratios)
    mean, ci = geometric_mean_ci(ratios)
    half = None if ci is None else (ci[1] - ci[0]) / 2
    if half is None or half > resolution:
        verdict = "unresolved"
    elif ci is not None and ci[1] < goal:
        verdict = "misses goal"
    else:
        verdict = "meets goal" if mean >= goal else "unresolved"
    return {
        "ratios": [round(x, 4) for x in ratios],
        "median_ratio": round(median, 4),
        "geomean_ratio": round(mean, 4),
        "geomean_ratio_ci95": [round(x, 4) for x in ci or []],
        "ci95_half_width": None if half is None else round(half, 4),
        "resolution": resolution,
        "goal": goal,
        "verdict": verdict,
        "meets_goal": verdict == "meets goal",
    }
