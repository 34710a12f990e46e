"""Validity: what makes a trial's or a run's numbers less than trustworthy, each finding with a stable code.

Errors fail the run (exit 1) and keep a trial out of the statistics where they say so; warnings are shown and
kept in the result's `validity` list. Every code is documented in docs/concepts/validity.md and has a test
that makes it fire on hand-made data (tests/test_verdicts.py).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

import workloads
from agent.wire import TrialRecord
from controller.spec import Experiment
from controller.stats import Description, Overhead, Ranked
from controller.store import ClockRow, Flag, HostFacts, StoredResult, TrialFacts

SATURATED_CPU_PCT = 90.0
MIN_STEADY_COVERAGE = 0.8  # of a hypervisor agent's host counters (a lost agent leaves gaps)
# a workload's samples may leave this much of the steady phase uncovered (timer jitter), no more: a load that
# stops early or starts late must not be averaged as if it had run throughout
STEADY_GAP_S, STEADY_GAP_FRACTION = 0.1, 0.01
NOISY_CI_PCT = 10.0
COARSE_SAMPLES = 3  # host samples a steady phase should hold at least
SAMPLE_JITTER = 0.05  # a 1 s sampler's samples last a few ms more; not a reason to call them coarse


class Issue(TypedDict):
    level: Literal["error", "warning"]
    code: str
    message: str
    trial: NotRequired[int]


class MetricResult(TypedDict):
    """One metric of the result: what the condition checks read."""

    unit: str
    better: str
    description: str
    by_condition: dict[str, Description]
    overhead: dict[str, Overhead]
    ranking: NotRequired[list[Ranked]]
    pairwise: NotRequired[list[dict[str, object]]]


def issue(level: Literal["error", "warning"], code: str, message: str, trial: int | None = None) -> Issue:
    found: Issue = {"level": level, "code": code, "message": message}
    if trial is not None:
        found["trial"] = trial
    return found


def trial_issues(
    experiment: Experiment,
    trial: TrialRecord,
    facts: TrialFacts,
    results: list[StoredResult],
    flags: list[Flag],
    uncertainty_s: dict[str, float] | None = None,
) -> tuple[list[Issue], bool]:
    """One trial's findings, and whether its KPIs count in the statistics."""
    label = f"trial {trial['idx']} ({trial['condition']} #{trial['repetition']})"
    if trial["status"] != "ok":
        message = f"{label} {trial['status']}: {trial['reason']}"
        level: Literal["error", "warning"] = (
            "warning" if trial["status"] == "cut_short" else "error"
        )  # its samples are kept
        return [issue(level, f"trial_{trial['status']}", message, trial["idx"])], False
    found = _workload_issues(experiment, trial, label, facts, results, uncertainty_s or {})
    found += _host_issues(experiment, trial, label, facts["host"])
    found += [issue(f["severity"], f["kind"], f"{label}: {f['message']}", trial["idx"]) for f in flags]
    if experiment.vsphere.on_migration == "exclude" and any(f["kind"] == "vm_migrated" for f in flags):
        found.append(issue("error", "trial_excluded", f"{label} left out of the statistics: a VM moved", trial["idx"]))
        return found, False
    if any(f["kind"] == "start_received_late" for f in flags):
        reason = "its agents did not start together"
        found.append(issue("error", "trial_excluded", f"{label} left out of the statistics: {reason}", trial["idx"]))
        return found, False
    return found, True


def version_issues(environment: dict[str, object] | None) -> list[Issue]:
    """Agents that run another vtax than the controller: they may validate or measure differently."""
    if not environment:
        return []
    controller = environment["controller"]["vtax"]  # type: ignore[index]
    agents: dict[str, dict[str, object]] = environment.get("agents") or {}  # type: ignore[assignment]
    return [
        issue(
            "warning",
            "version_mismatch",
            f"agent {name} runs vtax {found['vtax']}, the controller {controller}: install the same version on both",
        )
        for name, found in sorted(agents.items())
        if found.get("vtax") != controller
    ]


def clock_issues(experiment: Experiment, clocks: list[ClockRow]) -> list[Issue]:
    """An agent whose clock offset is known less well than the start skew the spec tolerates."""
    return [
        issue(
            "warning",
            "clock_uncertain",
            f"agent {reading['agent']}: clock offset known only to ±{1000 * reading['uncertainty_s']:.1f} ms",
        )
        for reading in clocks
        if 1000 * reading["uncertainty_s"] > experiment.timing.max_start_skew_ms
    ]


def _workload_issues(
    experiment: Experiment,
    trial: TrialRecord,
    label: str,
    facts: TrialFacts,
    results: list[StoredResult],
    uncertainty_s: dict[str, float],
) -> list[Issue]:
    """A workload's own findings, the host saturated, and per agent: its start off the common start by more than
    the limit even allowing for how well its clock is known, and steady seconds its samples do not cover."""
    issues = []
    kpis = facts["kpis"]
    for entry in experiment.workloads:
        hook = getattr(workloads.get(entry.kind), "warnings", None)
        if hook is None:
            continue
        prefix = f"{entry.label}."
        own = {name.removeprefix(prefix): value for name, value in kpis.items() if name.startswith(prefix)}
        warned = any(s["cpu_warning"] for s in facts["sources"] if s["workload"] == entry.label)
        for code, message in hook(own, entry.params, warned):
            issues.append(issue("warning", code, f"{label}: {entry.label}: {message}", trial["idx"]))
    cpu = kpis.get("host.cpu_pct")
    if cpu is not None and cpu >= SATURATED_CPU_PCT:
        issues.append(
            issue(
                "warning",
                "host_saturated",
                f"{label}: host CPU {cpu:.0f} % in the steady phase; the load generators share the host with what "
                "they measure, so this may measure the generator, not the appliance",
                trial["idx"],
            )
        )
    expected = experiment.timing.steady - max(STEADY_GAP_S, STEADY_GAP_FRACTION * experiment.timing.steady)
    measuring = {entry.label for entry in experiment.workloads if workloads.get(entry.kind).METRICS}  # not noop
    limit_ms = experiment.timing.max_start_skew_ms
    covered_s = {(s["agent"], s["workload"]): s["covered_s"] for s in facts["sources"]}
    for result in results:
        skew_ms = 1000 * (result["start_skew_s"] or 0.0)
        known_ms = 1000 * uncertainty_s.get(result["agent"], 0.0)
        if abs(skew_ms) - known_ms > limit_ms:  # off by more than the limit even at the clock's best
            issues.append(
                issue(
                    "warning",
                    "start_skew",
                    f"{label}: agent {result['agent']} started {skew_ms:+.1f} ms (± {known_ms:.1f} ms) off the "
                    f"common start (limit {limit_ms:g} ms)",
                    trial["idx"],
                )
            )
        if result["workload"] not in measuring:
            continue
        covered = covered_s.get((result["agent"], result["workload"]), 0.0)
        if covered < expected:
            issues.append(
                issue(
                    "warning",
                    "steady_incomplete",
                    f"{label}: {result['workload']} on {result['agent']} has samples for {covered:.2f} s of a "
                    f"{experiment.timing.steady:g} s steady phase: the load did not run through all of it",
                    trial["idx"],
                )
            )
    return issues


def _host_issues(experiment: Experiment, trial: TrialRecord, label: str, host: HostFacts) -> list[Issue]:
    """Every hypervisor agent's host counters cover the steady phase (an agent lost or late leaves gaps), and
    host samples are fine enough for it (vCenter's are 20 s long)."""
    issues = []
    coarsest = host["coarsest_s"]
    if coarsest * COARSE_SAMPLES > experiment.timing.steady * (1 + SAMPLE_JITTER):
        issues.append(
            issue(
                "warning",
                "host_counters_coarse",
                f"{label}: host counters come in {coarsest:.3g} s samples, too coarse for a "
                f"{experiment.timing.steady:g} s steady phase: warm-up and cool-down leak into them; make the steady "
                f"phase at least {COARSE_SAMPLES * coarsest:.3g} s",
                trial["idx"],
            )
        )
    for agent in experiment.agents:
        if not agent.hypervisor:
            continue
        seconds = host["steady_s"].get(agent.name, 0.0)
        if seconds < experiment.timing.steady * MIN_STEADY_COVERAGE:
            issues.append(
                issue(
                    "warning",
                    "host_counters_incomplete",
                    f"{label}: host counters of hypervisor agent {agent.name} cover {seconds:.1f} s of a "
                    f"{experiment.timing.steady:g} s steady phase",
                    trial["idx"],
                )
            )
    return issues


def appliance_issues(experiment: Experiment, host: list[HostFacts]) -> list[Issue]:
    """A pattern that matched no process in the whole run is a typo more likely than an idle appliance."""
    issues = []
    for agent in experiment.agents:
        if agent.appliance_processes is None:
            continue
        found = [trial["appliance"][agent.name] for trial in host if agent.name in trial["appliance"]]
        if found and not any(found):
            issues.append(
                issue(
                    "warning",
                    "appliance_not_found",
                    f"hypervisor agent {agent.name}: no process matched appliance_processes "
                    f"{agent.appliance_processes!r} in any trial, so appliance.host_cpu_pct is 0",
                )
            )
    return issues


def condition_issues(experiment: Experiment, metrics: dict[str, MetricResult]) -> list[Issue]:
    issues = []
    for condition in experiment.conditions:
        n = max((m["by_condition"][condition.name]["n"] for m in metrics.values()), default=0)
        if n < 2:
            issues.append(
                issue(
                    "warning" if n else "error",
                    "too_few_repetitions",
                    f"condition {condition.name}: {n} valid repetition(s); a confidence interval needs at least 2",
                )
            )
    for name, metric in metrics.items():
        if not name.endswith("throughput_gbps"):
            continue
        for condition, described in metric["by_condition"].items():
            if described["ci95"] and described["mean"]:
                width = 100.0 * (described["ci95"][1] - described["mean"]) / abs(described["mean"])
                if width > NOISY_CI_PCT:
                    issues.append(
                        issue(
                            "warning",
                            "noisy",
                            f"{name} under {condition}: 95 % CI is ±{width:.0f} % of the mean; add repetitions",
                        )
                    )
    return issues
