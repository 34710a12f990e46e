"""Stored runs as InfluxDB points: `vtax export` backfills runs made without InfluxDB, or while it was down."""

from __future__ import annotations

from typing import Any

from agent.points import host_lines, kpi_lines, marker_line, phase_of, sample_line
from controller.spec import Experiment
from controller.store import Store


def run_lines(store: Store, result: dict[str, Any]) -> list[str]:
    """Every sample, host second, trial marker and final KPI of a stored run, tagged as a live run tags them."""
    run = store.run(result["run_id"])
    experiment = Experiment.model_validate(run["spec"])
    timing = experiment.timing
    zones = {a.name: a.zone for a in experiment.agents}
    kinds = {w.label: w.kind for w in experiment.workloads}
    trials = {t["idx"]: t for t in store.trials(run["id"])}
    hosts = {(r["trial_idx"], r["agent"]): r["host"] for r in store.agent_results(run["id"])}
    lines: list[str] = []

    def tags_of(idx: int) -> dict[str, Any]:
        trial = trials[idx]
        return {"run": run["id"], "trial": idx, "condition": trial["condition"], "repetition": trial["repetition"]}

    def phase(sample: dict[str, Any]) -> str:
        start_at = trials[sample["trial_idx"]]["start_at"]
        return phase_of(sample["t"], sample["dt"], start_at=start_at, warmup=timing.warmup, steady=timing.steady)

    for idx, trial in trials.items():
        if trial["start_at"] is not None:
            lines.append(marker_line(tags_of(idx), event="start", t=trial["start_at"], status="running"))
        lines.append(
            marker_line(tags_of(idx), event="end", t=trial["ended"] or trial["start_at"], status=trial["status"])
        )
    for sample in store.samples(run["id"]):
        tags = {
            **tags_of(sample["trial_idx"]),
            "agent": sample["agent"],
            "host": hosts.get((sample["trial_idx"], sample["agent"])),
            "zone": zones.get(sample["agent"]),
            "workload": sample["workload"],
            "kind": kinds.get(sample["workload"]),
            "role": "client",
        }
        lines.append(sample_line(sample, tags, phase(sample)))
    for sample in store.host_samples(run["id"]):
        lines += host_lines(sample, {**tags_of(sample["trial_idx"]), "host": sample["host"]}, phase(sample))
    return lines + kpi_lines(result, run["finished"] or run["created"])
