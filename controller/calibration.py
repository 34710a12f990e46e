"""Calibration: what the test bed itself can carry and resolve, before any device is judged on it.

RFC 9411's reference test runs the traffic without the device, proving the bed exceeds what the device will be
asked to carry. `vtax calibrate` runs a spec's baseline twice per repetition, side by side as two conditions
("bed" and "bed-again"): the bed's value of the headline metric with its CI, and an A/A comparison whose
minimum detectable effect is the bed's noise floor, the smallest overhead these repetitions can resolve. In
the lab it can also inject a known cost (a tbf rate on the appliance) as a third condition and measure it
back against the goodput that rate allows, so the whole chain is checked against a known answer.
"""

from __future__ import annotations

from typing import TypedDict

from controller.errors import InputError
from controller.kpis import trial_kpis
from controller.spec import Experiment
from controller.stats import Description, Overhead
from controller.store import Store

HEADLINE = {"iperf3": "throughput_gbps", "http": "rps"}  # the metric a bed's capacity is stated in, per kind
# TCP payload per frame at MTU 1500 with timestamps: 1448 B of 1514 (design.md: tbf 500 Mbit/s → 0.478 Gbit/s)
TCP_GOODPUT = 1448 / 1514
BED, AGAIN, INJECTED = "bed", "bed-again", "injected"


class Injected(TypedDict):
    """A known cap measured back."""

    rate_mbit: float
    expected: float  # Gbit/s of TCP goodput the cap allows
    measured: Description
    error_pct: float | None  # measured mean against expected


class Calibration(TypedDict):
    """The result JSON's `calibration`."""

    metric: str
    unit: str
    repetitions: int
    bed: Description
    aa: Overhead  # bed-again against bed: should show no difference
    resolves_pct: float | None  # the A/A's minimum detectable effect: the bed's noise floor
    injected: Injected | None


def calibration_experiment(experiment: Experiment, repetitions: int, inject_mbit: float | None) -> Experiment:
    """The spec's baseline as an A/A pair (and the injected cap), interleaved, without SLA, search or tiles."""
    headline_metric(experiment)
    if inject_mbit is not None:
        first = experiment.workloads[0]
        if first.kind != "iperf3" or first.params.protocol != "tcp":
            raise InputError("--inject-rate: the expected goodput is known for an iperf3 TCP first workload only")
    bed = experiment.baseline.model_dump(mode="json", exclude_none=True)
    conditions = [{**bed, "name": BED, "baseline": True}, {**bed, "name": AGAIN, "baseline": False}]
    if inject_mbit is not None:
        conditions.append(
            {
                "name": INJECTED,
                "description": f"the lab appliance's tbf at {inject_mbit:g} Mbit/s",
                "setup": [f"vtax lab appliance --rate {inject_mbit:g}"],
                "teardown": ["vtax lab appliance --off"],
            }
        )
    data = experiment.model_dump(mode="json", exclude_none=True)
    data |= {
        "name": calibration_name(experiment),
        "conditions": conditions,
        "repetitions": repetitions,
        "order": "interleaved",
        "sla": {},
    }
    data.pop("search", None)
    tiled = {entry.label for entry in experiment.tile_workloads()}  # a tile's workloads run in a tiles search only
    data["workloads"] = [
        w for w, entry in zip(data["workloads"], experiment.workloads, strict=True) if entry.label not in tiled
    ]
    data.pop("tiles", None)
    return Experiment.model_validate(data)


def calibration_name(experiment: Experiment) -> str:
    """The name a spec's calibration runs under: how a search of the same spec finds its newest one."""
    return f"{experiment.name}-calibration"


def headline_metric(experiment: Experiment) -> str:
    """The metric the bed is calibrated in: the first workload's throughput (iperf3) or request rate (http)."""
    first = experiment.workloads[0]
    if first.kind not in HEADLINE:
        raise InputError(f"workloads[0]: calibration needs an iperf3 or http first workload, got {first.kind}")
    return f"{first.label}.{HEADLINE[first.kind]}"


def calibrate(result: dict, experiment: Experiment, inject_mbit: float | None) -> Calibration:
    """The calibration read from the run of `calibration_experiment`'s result."""
    metric = headline_metric(experiment)
    entry = result["metrics"][metric]
    aa: Overhead = entry["overhead"][AGAIN]
    injected: Injected | None = None
    if inject_mbit is not None:
        measured: Description = entry["by_condition"][INJECTED]
        expected = inject_mbit / 1000 * TCP_GOODPUT
        mean = measured["mean"]
        injected = {
            "rate_mbit": inject_mbit,
            "expected": expected,
            "measured": measured,
            "error_pct": None if mean is None else 100 * (mean / expected - 1),
        }
    return {
        "metric": metric,
        "unit": entry["unit"],
        "repetitions": experiment.repetitions,
        "bed": entry["by_condition"][BED],
        "aa": aa,
        "resolves_pct": aa.get("mde_pct"),
        "injected": injected,
    }


def calibration_text(found: Calibration) -> list[str]:
    """The calibration as a person reads it, a line per finding."""
    bed, aa, unit = found["bed"], found["aa"], found["unit"]
    lines = [f"test bed: {found['metric']} {_value(bed['mean'])} {unit} {_ci(bed['ci95'])} without the device"]
    resolves = found["resolves_pct"]
    ci = aa["ci95_pct"]
    between = f"A/A {aa['pct']:+.1f} % [{ci[0]:+.1f}, {ci[1]:+.1f}]" if aa["pct"] is not None and ci else "A/A n/a"
    if aa["significant"]:
        lines.append(
            f"the bed is not stable: two runs of the same condition differ ({between}); find the noise before "
            "judging a device on it"
        )
    elif resolves is not None:
        lines.append(f"resolves ±{resolves:.1f} % with {found['repetitions']} repetitions ({between})")
    injected = found["injected"]
    if injected is not None and injected["error_pct"] is not None:
        measured = injected["measured"]["mean"]
        lines.append(
            f"injected {injected['rate_mbit']:g} Mbit/s measured {measured * 1000:.1f} Mbit/s "
            f"({injected['error_pct']:+.1f} % vs the {injected['expected'] * 1000:.1f} Mbit/s of TCP goodput it allows)"
        )
    return lines


class Bed(TypedDict):
    """What the newest calibration of a spec found the bed to carry."""

    run_id: str
    metric: str
    mean: float


def calibrated_bed(store: Store, experiment: Experiment) -> Bed | None:
    """The bed's capacity from the newest completed `vtax calibrate` run of this spec in the store: the mean of
    the headline metric over its `bed` trials; None when the spec was never calibrated (or its first workload
    has no headline)."""
    name = calibration_name(experiment)
    run = next((r for r in store.runs(limit=None, status="completed") if r["name"] == name), None)
    if run is None or experiment.workloads[0].kind not in HEADLINE:
        return None
    calibrated = Experiment.model_validate(store.run(run["id"])["spec"])
    metric = headline_metric(calibrated)
    values = [
        trial_kpis(calibrated, t["start_at"], store.samples(run["id"], t["idx"]), []).get(metric)
        for t in store.trials(run["id"])
        if t["condition"] == BED and t["status"] == "ok" and t["start_at"] is not None
    ]
    measured = [v for v in values if v is not None]
    return {"run_id": run["id"], "metric": metric, "mean": sum(measured) / len(measured)} if measured else None


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f"[{ci[0]:.4g}, {ci[1]:.4g}]"
