"""The InfluxDB output: a run streamed live as an event listener, and stored runs as points (`vtax export`).

Live, the controller writes the trial markers, the host counters it measures itself (its own machine,
vCenter's) and the final KPIs; agents write their own samples and host counters (agent.edge). The schema is
`agent.points`'. Points the server does not take wait in the sink's spool, never lost silently.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from agent.points import host_lines, kpi_lines, marker_line, phase_of, sample_line, segment_lines, soak_lines
from agent.settings import InfluxConfig
from agent.sink import InfluxSink, probe
from agent.urls import redact
from agent.wire import HostSample, TrialRecord, TrialTags
from controller.events import Events
from controller.plan import Trial
from controller.spec import Experiment
from controller.store import Store


class InfluxOutput:
    """Listens to a run's events and writes what the controller measures to InfluxDB as it happens."""

    def __init__(self, config: InfluxConfig, events: Events, experiment: Experiment, errors: Console) -> None:
        """Checks the server at once: one that does not answer is warned of now, and its points spooled."""
        self.sink = InfluxSink(config.model_copy(update={"spool_dir": config.spool_dir / "controller"}))
        problem = probe(config)
        if problem is not None:
            errors.print(
                f"vtax: warning: InfluxDB at {redact(config.url)} does not answer ({problem}); the run goes on, its "
                f"points wait in {self.sink.config.spool_dir} and are sent once it answers (or with `vtax export`)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        self._timing = experiment.timing
        self._soak = experiment.soak is not None
        self._run_id = ""
        self._starts: dict[int, float] = {}  # trial → its common start, for the phase of late (vCenter) samples
        events.run_start.add_listener(self._on_run_start)
        events.trial_start.add_listener(self._on_trial_start)
        events.host_sample.add_listener(self._on_host_sample)
        events.trial_end.add_listener(self._on_trial_end)

    def _tags(self, trial: Trial) -> TrialTags:
        return {"run": self._run_id, "trial": trial.index, "condition": trial.condition, "repetition": trial.repetition}

    def _on_run_start(self, *, run_id: str, **_: object) -> None:
        self._run_id = run_id

    def _on_trial_start(self, *, trial: Trial, start_at: float, **_: object) -> None:
        self._starts[trial.index] = start_at
        self.sink.submit([marker_line(self._tags(trial), event="start", t=start_at, status="running")])

    def _on_host_sample(self, *, trial: Trial, sample: HostSample) -> None:
        if "agent" in sample:  # a hypervisor agent wrote its own
            return
        phase = phase_of(
            sample["t"],
            sample["dt"],
            start_at=self._starts[trial.index],
            warmup=self._timing.warmup,
            steady=self._timing.steady,
        )
        self.sink.submit(host_lines(sample, {**self._tags(trial), "host": sample["host"]}, phase))

    def _on_trial_end(self, *, trial: Trial, record: TrialRecord, kpis: dict[str, float], **_: object) -> None:
        ended = record["ended"] or time.time()
        self.sink.submit([marker_line(self._tags(trial), event="end", t=ended, status=record["status"])])
        if self._soak and record["status"] == "ok" and record["start_at"] is not None:
            self.sink.submit(segment_lines(self._tags(trial), kpis, record["start_at"]))

    def write_result(self, result: dict[str, Any]) -> None:
        """The run's final KPIs, and a soak's drift verdicts."""
        self.sink.submit(kpi_lines(result, time.time()) + (soak_lines(result) if result.get("soak") else []))


FINAL_FLUSH_S = 30.0


def report_sink(sink: InfluxSink, console: Console, errors: Console) -> None:
    """Flush (bounded, and said), then say what reached InfluxDB; anything left is in the spool, never silently
    gone."""
    if sink.pending():
        console.print(f"InfluxDB: writing the last {sink.pending()} points (at most {FINAL_FLUSH_S:g} s)…")
    sink.close(timeout=FINAL_FLUSH_S)
    stats = sink.stats()
    console.print(f"InfluxDB: {stats['sent']} points written, {stats['rejected']} rejected")
    if stats["spooled_bytes"] or stats["spool_dropped"]:
        errors.print(
            f"vtax: {stats['spooled_bytes']} bytes of points wait in {sink.config.spool_dir} (last error: "
            f"{stats['last_error']}); they are sent at the next run, or with `vtax export`"
        )


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

    def tags_of(idx: int) -> TrialTags:
        trial = trials[idx]
        return {"run": run["id"], "trial": idx, "condition": trial["condition"], "repetition": trial["repetition"]}

    def phase(sample: dict[str, Any]) -> str:
        start_at = trials[sample["trial_idx"]]["start_at"]
        return phase_of(sample["t"], sample["dt"], start_at=start_at, warmup=timing.warmup, steady=timing.steady)

    kpis = {t["idx"]: t["kpis"] for t in result["trials"]}
    for idx, trial in trials.items():
        if trial["start_at"] is not None:
            lines.append(marker_line(tags_of(idx), event="start", t=trial["start_at"], status="running"))
            if result.get("soak") and trial["status"] == "ok":
                lines += segment_lines(tags_of(idx), kpis.get(idx, {}), trial["start_at"])
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
    lines += soak_lines(result) if result.get("soak") else []
    return lines + kpi_lines(result, run["finished"] or run["created"])
