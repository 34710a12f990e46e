"""What load is: one module per workload kind, shared by the controller (validation) and the agent (execution).

Each kind module exposes the `WorkloadKind` protocol from `workloads.base`. The registry below is the one
place a new kind is added. It is imported on first use, so a tool's child process that needs one helper module
(the locust child needs `histogram`) does not pay for pydantic and every kind at start-up.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from workloads.base import WorkloadKind

_MODULES = ("iperf3", "http", "cpu", "noop")


@functools.cache
def kinds() -> dict[str, WorkloadKind]:
    """Every workload kind by name."""
    modules = [cast("WorkloadKind", importlib.import_module(f"workloads.{name}")) for name in _MODULES]
    return {module.KIND: module for module in modules}


def get(kind: str) -> WorkloadKind:
    """The workload module for `kind`; KeyError names the known kinds."""
    try:
        return kinds()[kind]
    except KeyError:
        raise KeyError(f"unknown workload kind {kind!r}; expected one of {', '.join(sorted(kinds()))}") from None
