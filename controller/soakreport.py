"""A soak in the terminal: each metric's drift per condition (trend per hour with its p-value, the change
points with the segment each starts at and the levels either side), each agent's memory growth, the failed
checks; and, for `vtax show RUN --segments`, every segment's values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from controller.drift import ChangePoint, Trend
    from controller.soak import SoakResult


def _value(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def trend_text(found: Trend) -> Text:
    """ "−2.1 %/h (p < 0.001)", "no trend (p = 0.42)", "too few segments"."""
    if found["verdict"] == "too_short":
        return Text(f"too few segments ({found['n']})", style="dim")
    p_value = found["p_value"]
    if p_value is None:
        return Text("no trend (every segment alike)", style="dim")
    p = "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"
    if found["verdict"] == "no trend":
        return Text(f"no trend ({p})", style="dim")
    pct = found["pct_per_h"]
    slope = f"{pct:+.2f} %/h" if pct is not None else f"{found['slope_per_h']:+.3g}/h"
    return Text(f"{slope} ({p})", style="yellow")


def steps_text(steps: list[ChangePoint]) -> Text:
    """ "segment 12: 0.478 → 0.287 (−40 %)", one per line; "none" when the level held."""
    if not steps:
        return Text("none", style="dim")
    lines = [
        f"segment {c['segment'] + 1}: {_value(c['before'])} → {_value(c['after'])}"
        + (f" ({c['pct']:+.0f} %)" if c["pct"] is not None else "")
        for c in steps
    ]
    return Text("\n".join(lines), style="yellow")


def soak_table(soak: SoakResult) -> Table:
    """One row per metric and condition: its level, trend and change points over the soak."""
    hours = soak["duration_s"] / 3600
    table = Table(
        title=f"soak: {soak['segments_measured']} of {soak['segments_planned']} segments of "
        f"{soak['segment_s']:g} s ({hours:.3g} h): trends (Mann-Kendall, Sen's slope) and change points",
        title_justify="left",
    )
    for column in ("metric", "condition", "first → last segment", "trend", "change points"):
        table.add_column(column, justify="right" if column == "first → last segment" else "left")
    for name, by_condition in soak["metrics"].items():
        for condition, drift in by_condition.items():
            values = drift["values"]
            level = f"{_value(values[0])} → {_value(values[-1])}" if values else "–"
            unit = f" [{drift['unit']}]" if drift["unit"] else ""
            table.add_row(
                f"{name}{unit}", condition, level, trend_text(drift["trend"]), steps_text(drift["change_points"])
            )
    return table


def memory_lines(soak: SoakResult) -> list[Text]:
    grown = {f"agent {agent}": found for agent, found in soak["memory"].items()} | soak["host_memory"]
    lines = []
    for subject, found in grown.items():
        if found["ratio"] is None or found["slope_per_h"] is None:
            continue
        lines.append(
            Text(
                f"{subject} memory: {found['first_hour']:.0f} MB at the start, {found['end']:.0f} MB at the end "
                f"(× {found['ratio']:.2f}, {found['slope_per_h']:+.1f} MB/h)"
            )
        )
    for check in soak["checks"]:
        if not check["ok"]:
            lines.append(Text(f"soak check failed: {check['message']} (limit {check['limit']:g})", style="red"))
    return lines


def segments_table(result: dict[str, Any]) -> Table:
    """Every segment of a soak: its condition, status, and each metric's value (`vtax show RUN --segments`)."""
    soak: SoakResult = result["soak"]
    names = list(soak["metrics"])
    table = Table(title=f"segments of run {result['run_id']}", title_justify="left")
    table.add_column("segment", justify="right")
    table.add_column("condition")
    table.add_column("status")
    for name in names:
        table.add_column(name, justify="right")
    for trial in result["trials"]:
        kpis = trial["kpis"]
        table.add_row(
            str(trial["idx"] + 1),
            trial["condition"],
            Text(trial["status"], style="green" if trial["status"] == "ok" else "red"),
            *(_value(kpis.get(name)) for name in names),
        )
    return table
