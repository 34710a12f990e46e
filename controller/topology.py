"""From a workload's topology to its flows: which agent loads which server.

Zones come from the spec or, in the distributed engine, from what each agent registered; selectors
(`zone:NAME`, `label:KEY=VALUE`) are resolved here, at run start, when both are known. Selectors pick guests
only: a hypervisor agent runs load only where a workload names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from controller.errors import InputError
from controller.spec import Experiment, WorkloadEntry


@dataclass(frozen=True, kw_only=True)
class AgentInfo:
    """What the run loop knows of one agent once the engine is up."""

    name: str
    address: str
    zone: str | None
    labels: dict[str, str]
    hypervisor: bool = False


@dataclass(frozen=True, kw_only=True)
class Flow:
    """One client of one workload, with the agent serving it (None: no server side, or an external one)."""

    workload: WorkloadEntry
    client: str
    server: str | None
    tile: int | None = None  # in a tiles search, the tile (guest VM) this copy of the flow stands for

    @property
    def key(self) -> tuple[str, str, str | None, int | None]:
        return (self.workload.label, self.client, self.server, self.tile)


def select(selector: str, agents: dict[str, AgentInfo], field: str) -> list[str]:
    """Agent names a selector stands for; InputError when it selects nobody."""
    if selector.startswith("zone:"):
        zone = selector.removeprefix("zone:")
        chosen = [a.name for a in agents.values() if a.zone == zone and not a.hypervisor]
    elif selector.startswith("label:"):
        key, _, value = selector.removeprefix("label:").partition("=")
        chosen = [a.name for a in agents.values() if a.labels.get(key) == value and not a.hypervisor]
    else:
        chosen = [selector] if selector in agents else []
    if not chosen:
        zones = sorted({a.zone for a in agents.values() if a.zone})
        raise InputError(f"{field}: {selector!r} selects no agent (zones: {', '.join(zones) or 'none'})")
    return chosen


def _select_all(selectors: list[str], agents: dict[str, AgentInfo], field: str) -> list[str]:
    names: list[str] = []
    for i, selector in enumerate(selectors):
        names += [n for n in select(selector, agents, f"{field}[{i}]") if n not in names]
    return names


def expand(experiment: Experiment, agents: dict[str, AgentInfo]) -> list[Flow]:
    """Every flow of every workload, in spec order."""
    flows: list[Flow] = []
    for i, entry in enumerate(experiment.workloads):
        where = f"workloads[{i}]"
        if entry.topology == "many-to-one":
            server = select(entry.server, agents, f"{where}.server")[0] if entry.server else None
            clients = _select_all(entry.agents, agents, f"{where}.agents")
            flows += [Flow(workload=entry, client=c, server=server) for c in clients]
        elif entry.topology == "pairs":
            flows += [Flow(workload=entry, client=p.client, server=p.server) for p in entry.pairs]
        elif entry.topology == "mesh":
            members = _select_all(entry.agents, agents, f"{where}.agents")
            flows += [Flow(workload=entry, client=a, server=b) for a in members for b in members if a != b]
        else:
            clients = sorted(select(f"zone:{entry.from_zone}", agents, f"{where}.from_zone"))
            servers = sorted(select(f"zone:{entry.to_zone}", agents, f"{where}.to_zone"))
            flows += [Flow(workload=entry, client=c, server=servers[j % len(servers)]) for j, c in enumerate(clients)]
    return flows


def tile_flows(base: list[Flow], tiles: int) -> list[Flow]:
    """The flows of `tiles` tiles: tile i takes the i-th flow of each tile workload (round robin over its
    flows), so tiles spread over the workload's agents as guest VMs spread over a host."""
    by_workload: dict[str, list[Flow]] = {}
    for flow in base:
        by_workload.setdefault(flow.workload.label, []).append(flow)
    return [dataclasses.replace(flows[i % len(flows)], tile=i) for i in range(tiles) for flows in by_workload.values()]
