"""Modelled consolidation: how many guest VMs of the spec's `profile` a host carries under each condition.

Where no tiles search was run, a run's host CPU per Gbit/s still says what each condition costs. A VM that sends
`gbps_per_vm` and needs `cpu_pct_per_vm` for its own work costs the host `cpu_pct_per_vm + gbps_per_vm ×
cpu_per_gbps`, so `cpu_budget_pct` holds budget / that many VMs. The CI follows from cpu_per_gbps's CI (the
model is monotone in it). It is a model, linear in the traffic and blind to limits other than CPU, and every
output says so; measured tiles, where the run has them, stand beside it.
"""

from __future__ import annotations

from typing import Any, TypedDict

from controller.spec import ProfileSpec

METRIC = "host.cpu_per_gbps"


class Modelled(TypedDict):
    """A condition's modelled VMs per host (the result JSON's `consolidation.<condition>`)."""

    vms: float | None  # VMs of the profile the CPU budget holds, at the mean cpu_per_gbps
    ci95: list[float] | None  # from cpu_per_gbps's 95 % CI: [at its upper end, at its lower end]
    cpu_per_gbps: float | None  # the measured cost it came from, % of the host per Gbit/s
    modelled: bool  # always True: this is arithmetic on a measurement, not a measured count


def vms(profile: ProfileSpec, cpu_per_gbps: float) -> float:
    """VMs of the profile a host's CPU budget holds when each Gbit/s costs `cpu_per_gbps` % of the host."""
    return profile.cpu_budget_pct / (profile.cpu_pct_per_vm + profile.gbps_per_vm * cpu_per_gbps)


def consolidation(profile: ProfileSpec, metrics: dict[str, Any]) -> dict[str, Modelled]:
    """Every condition's modelled VMs per host, from its host CPU per Gbit/s in the run's metrics."""
    by_condition = (metrics.get(METRIC) or {}).get("by_condition", {})
    modelled: dict[str, Modelled] = {}
    for condition, described in by_condition.items():
        mean, ci = described["mean"], described["ci95"]
        usable = mean is not None and mean > 0
        modelled[condition] = {
            "vms": vms(profile, mean) if usable else None,
            "ci95": [vms(profile, ci[1]), vms(profile, max(ci[0], 1e-12))] if usable and ci else None,
            "cpu_per_gbps": mean,
            "modelled": True,
        }
    return modelled


def modelled_text(found: Modelled) -> str:
    """ "≈ 41 VMs [38, 44] (modelled)", or why there is no number."""
    if found["vms"] is None:
        return "– (no host CPU per Gbit/s measured)"
    ci = f" [{found['ci95'][0]:.0f}, {found['ci95'][1]:.0f}]" if found["ci95"] else ""
    return f"≈ {found['vms']:.0f} VMs{ci} (modelled)"
