"""The layering rules of docs/development.md, read from the code with `ast`, and the wire's
contract: what the controller sends binds to what the agent's tasks accept."""

from __future__ import annotations

import ast
import inspect
import time
import typing
from pathlib import Path

import pytest

from agent import wire
from agent.edge import AgentHost, execute
from agent.tasks import TASKS, TaskIO
from controller.engine import EmbeddedEngine
from controller.hostsources import TrialWindow, host_counters_request
from controller.plan import Trial
from controller.runloop import RunLoop
from controller.spec import parse
from controller.store import Store
from controller.topology import expand

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("controller", "agent", "workloads")
CORE = (
    "controller.spec",
    "controller.plan",
    "controller.runloop",
    "controller.engine",
    "controller.distributed",
    "controller.clock",
    "controller.kpis",
    "controller.validity",
    "controller.analysis",
    "controller.store",
    "controller.stats",
    "controller.hostsources",
    "controller.hooks",
    "controller.events",
    "controller.topology",
)
WINGS_AND_OUTPUTS = (
    "controller.vsphere",
    "controller.lab",
    "controller.influx",
    "controller.report",
    "controller.cli",
    "controller.options",
    "agent.sink",
    "agent.points",
)
DATA_TABLES = ("controller.metrics",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module of the three packages → the project modules it imports (anywhere in its body)."""
    modules = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import submodule` imports the submodule; `from module import name`, the module
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    found.add(submodule if submodule in modules else node.module)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_there_is_no_import_circle() -> None:
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                circle = [*path[path.index(imported) :], imported]
                pytest.fail("import circle: " + " → ".join(circle))
            if imported not in state:
                visit(imported)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_core_imports_no_wing_and_no_output() -> None:
    graph = _imports()
    assert set(CORE) <= set(graph), "a core module was renamed: update CORE here and the architecture page"
    offences = {m: sorted(i for i in graph[m] if _within(i, WINGS_AND_OUTPUTS)) for m in CORE}
    assert not {m: found for m, found in offences.items() if found}


def test_agents_and_workloads_never_import_the_controller_and_data_tables_import_nothing_of_it() -> None:
    graph = _imports()
    for module, imported in graph.items():
        if _within(module, ("agent", "workloads", *DATA_TABLES)):
            assert not [i for i in imported if i.startswith("controller")], module


def test_validating_a_spec_loads_no_engine_sampler_or_wing() -> None:
    """`vtax validate` reads a YAML file: it need not load psutil, the agents' sampler or a wing."""
    graph = _imports()
    reached, todo = set(), ["controller.spec"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += graph[module]
    assert not {m for m in reached if _within(m, ("agent.hostsampler", "controller.engine", *WINGS_AND_OUTPUTS))}


def _accepted(task: str, request: object) -> None:
    """The request has exactly its wire type's keys and, less those the agent's edge acts on itself, binds to
    the task function's signature."""
    assert isinstance(request, dict)
    expected = set(typing.get_type_hints(wire.REQUESTS[task]))
    assert set(request) == expected, task
    task_kwargs = {key: value for key, value in request.items() if key not in wire.EDGE_FIELDS}
    inspect.signature(TASKS[task]).bind(**task_kwargs, io=TaskIO())


def test_every_request_the_controller_builds_binds_to_its_task(tmp_path: Path) -> None:
    experiment = parse(
        """
        name: wire
        agents: [{name: a}, {name: b}, {name: h, hypervisor: true}]
        conditions: [{name: base, baseline: true}]
        workloads: [{kind: iperf3, agents: [a], server: b}]
        """
    )
    loop = RunLoop(experiment, store=Store(tmp_path / "v.db"), engine=EmbeddedEngine({}), spec_path=None)
    loop.agents = loop._agent_table()
    [flow] = expand(experiment, loop.agents)
    trial = Trial(index=0, condition="base", repetition=1)
    now = time.time()
    _accepted(wire.SERVE, loop._serve_request(flow, now + 20))
    _accepted(wire.RUN_WORKLOAD, loop._client_request(trial, flow, {"host": "127.0.0.1", "port": 1}, now, now + 9))
    window = TrialWindow(tags=loop._tags(trial), start_at=now, seconds=3)
    _accepted(wire.HOST_COUNTERS, host_counters_request(experiment, window, None))
    _accepted(wire.END_TRIAL, {"run": loop.run_id, "trial": 0})
    _accepted(wire.PING, {})
    _accepted(wire.KEPT, {"run": loop.run_id, "forget_before": 0})
    assert set(TASKS) == set(wire.TASK_NAMES) == set(wire.REQUESTS)


def test_the_agent_edge_converts_times_once_each_way() -> None:
    """An agent whose clock is 50 s behind the controller's: the request's times are converted to its clock
    (so the load starts in 0.2 s, not in 50.2 s), and everything it answers is in the controller's clock again."""
    offset = -50.0
    start_at = time.time() - offset + 0.2  # the controller's clock, which reads 50 s ahead of this one
    tags: wire.ClientTags = {
        "run": "r",
        "trial": 0,
        "condition": "c",
        "repetition": 1,
        "zone": None,
        "workload": "noop",
        "kind": "noop",
        "role": "client",
    }
    request: wire.Request = {
        "id": 1,
        "task": wire.RUN_WORKLOAD,
        "kwargs": {
            "agent": "a",
            "workload": "noop",
            "kind": "noop",
            "params": {},
            "target": None,
            "start_at": start_at,
            "duration": 0.3,
            "deadline": start_at + 5,
            "tags": tags,
            "warmup": 0.0,
            "steady": 0.3,
        },
        "clock_offset": offset,
    }
    replies: list[wire.Message] = []
    began = time.monotonic()
    execute(request, AgentHost(name="a"), replies.append)
    assert time.monotonic() - began < 2  # the local start was 0.2 s away: no waiting 50 s
    [reply] = replies
    assert reply["ok"], reply
    result = reply["result"]
    assert result["start_at"] == pytest.approx(start_at, abs=1e-6)  # converted in and back out
    # it started on time by its own clock, which reads 50 s behind: converted back, on time by the controller's
    assert result["started_at"] - start_at == pytest.approx(0.0, abs=0.1)


def test_a_run_loads_no_heavy_library_it_does_not_use() -> None:
    """What every `vtax` command and embedded run imports stays light: scipy.stats and pymannkendall (a soak's
    drift, 1.6 s), Celery, pyVmomi, influxdb_client and plotly load only in the commands that use them. A soak's
    statistics imported by the analysis cost every run 2 s once, and the suite 5 minutes."""
    import subprocess
    import sys

    heavy = ("scipy.stats", "pymannkendall", "celery", "pyVmomi", "influxdb_client", "plotly")
    probe = (
        "import sys, controller.cli, controller.analysis, controller.report, controller.runloop, controller.engine; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "", done.stdout
