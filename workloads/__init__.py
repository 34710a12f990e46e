"""What load is: one module per workload kind, shared by the controller (validation) and the agent (execution).

Each kind module exposes the `WorkloadKind` protocol from `workloads.base`. The registry below is the one
place a new kind is added.
"""

from workloads import cpu, http, iperf3, noop
from workloads.base import WorkloadKind

KINDS: dict[str, WorkloadKind] = {module.KIND: module for module in (iperf3, http, cpu, noop)}


def get(kind: str) -> WorkloadKind:
    """The workload module for `kind`; KeyError names the known kinds."""
    try:
        return KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown workload kind {kind!r}; expected one of {', '.join(sorted(KINDS))}") from None
