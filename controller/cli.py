"""The `vtax` command line."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from controller import spec as spec_module
from controller.analysis import analyse
from controller.demo import demo_experiment
from controller.errors import InputError, VtaxError
from controller.events import Events
from controller.report import LiveDisplay, print_result
from controller.runloop import RunLoop
from controller.store import DEFAULT_PATH, Store

app = typer.Typer(
    help="vtax: measure what virtualization security appliances cost, with repeated trials and confidence intervals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
if not console.is_terminal:
    console = Console(width=140)  # logs and CI: do not squeeze the table into 80 columns
errors = Console(stderr=True)

StoreOption = Annotated[str, typer.Option("--store", envvar="VTAX_STORE", help="SQLite run store")]
JsonOption = Annotated[Path | None, typer.Option("--json", help="write the run's result object to this file")]
INTERRUPTED = 130


def _check_writable(path: Path | None) -> None:
    if path is not None and not path.absolute().parent.is_dir():
        raise InputError(f"{path}: --json: directory {path.absolute().parent} does not exist")


def _write_json(path: Path | None, result: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"result written to {path}")


def _execute(
    experiment: spec_module.Experiment, spec_path: str | None, store_path: str, json_path: Path | None
) -> None:
    _check_writable(json_path)
    store = Store(store_path)
    events = Events()
    LiveDisplay(console, events, warmup=experiment.timing.warmup, steady=experiment.timing.steady)
    plan_size = len(experiment.conditions) * experiment.repetitions
    console.print(
        f"[bold]{experiment.name}[/]: {len(experiment.conditions)} conditions × {experiment.repetitions} repetitions "
        f"= {plan_size} trials of {experiment.timing.duration:g} s, {experiment.order} order"
    )
    loop = RunLoop(experiment, store=store, spec_path=spec_path, events=events)
    try:
        run_id = loop.execute()
    except KeyboardInterrupt:
        errors.print(f"vtax: interrupted; teardown hooks ran; run {loop.run_id} kept in {store.path} as interrupted")
        raise typer.Exit(INTERRUPTED) from None
    except VtaxError as exc:
        errors.print(f"vtax: run {loop.run_id} aborted, kept in {store.path}")
        raise exc
    result = analyse(store, run_id)
    print_result(console, result)
    _write_json(json_path, result)
    raise typer.Exit(0 if result["passed"] else 1)


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="experiment spec (YAML)")],
    json_path: JsonOption = None,
    store: StoreOption = DEFAULT_PATH,
) -> None:
    """Run an experiment and print its summary. Exit 1 when an SLA or validity check fails."""
    _execute(spec_module.load(spec), str(spec), store, json_path)


@app.command()
def demo(json_path: JsonOption = None, store: StoreOption = DEFAULT_PATH) -> None:
    """Run the built-in demo: iperf3 over loopback, direct against a userspace relay appliance."""
    _execute(demo_experiment(), None, store, json_path)


@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="experiment spec (YAML)")]) -> None:
    """Check a spec without running it."""
    experiment = spec_module.load(spec)
    trials = len(experiment.conditions) * experiment.repetitions
    console.print(
        f"{spec}: ok · {len(experiment.conditions)} conditions × {experiment.repetitions} repetitions = {trials} "
        f"trials, about {trials * (experiment.timing.duration + experiment.timing.lead + 1):.0f} s"
    )


@app.command()
def schema() -> None:
    """Print the spec's JSON Schema, for editors."""
    print(json.dumps(spec_module.schema(), indent=2))


@app.command()
def runs(
    store: StoreOption = DEFAULT_PATH,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List stored runs, newest first."""
    rows = Store(store).runs()
    if as_json:
        print(json.dumps([{k: v for k, v in r.items() if k != "spec_json"} for r in rows], indent=2))
        return
    table = Table("run", "name", "engine", "status", "trials", "created")
    for row in rows:
        created = datetime.fromtimestamp(row["created"]).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(row["id"], row["name"], row["engine"], row["status"], str(row["trials"]), created)
    console.print(table if rows else f"no runs in {store}")


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix of it")],
    json_path: JsonOption = None,
    store: StoreOption = DEFAULT_PATH,
) -> None:
    """Print a stored run's summary again, recomputed from the store."""
    _check_writable(json_path)
    result = analyse(Store(store), run_id)
    print_result(console, result)
    _write_json(json_path, result)


def main() -> None:
    try:
        app()
    except VtaxError as exc:
        errors.print(f"vtax: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
