"""The `vtax` command line: the composition root. It builds the engine, the outputs (the live display,
InfluxDB) as event listeners, and whatever the wings hand a run (vSphere's host counters, hook actions and
placement), and passes them to the run loop, which knows none of them."""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import re
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from agent.settings import DEFAULT_TASK_SLOTS
from agent.urls import redact
from controller import spec as spec_module
from controller.errors import InfrastructureError, InputError, VtaxError
from controller.lab.cli import lab_app
from controller.options import (
    AsJsonOption,
    BrokerCertsOption,
    BrokerOption,
    InfluxConfigOption,
    InfluxOption,
    JsonOption,
    MixedVersionsOption,
    StoreOption,
    VerboseOption,
    broker_settings,
    check_writable,
    console,
    errors,
    influx_settings,
    write_json,
)
from controller.store import DEFAULT_PATH, Store
from controller.vsphere import cli as vsphere_cli
from workloads.base import LOOPBACK

if TYPE_CHECKING:
    from agent.settings import BrokerConfig, InfluxConfig
    from controller.engine import Engine
    from controller.vsphere.session import Vsphere

# Celery, influxdb-client, pyVmomi, scipy and plotly load in the commands that use them: `vtax lab …` runs as
# a hook once or twice per trial and `vtax show` is run by hand, and importing everything up front cost each
# call 0.9 s (now 0.3 s).

app = typer.Typer(
    help="vtax: measure what virtualization security appliances cost, with repeated trials and confidence intervals.",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from agent.identity import version  # 50 ms: only when asked

        console.print(f"vtax {version()}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print vtax's version and exit")
    ] = False,
) -> None:
    """Without a command, the help."""
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit()


INTERRUPTED = 130


def _engine(
    experiment: spec_module.Experiment,
    broker: BrokerConfig | None,
    influx: InfluxConfig | None,
    mixed_versions: bool = False,
) -> Engine:
    from controller.distributed import CeleryEngine
    from controller.engine import EmbeddedEngine

    if broker:
        relayed = [c.name for c in experiment.conditions if c.appliance == "relay"]
        if relayed:
            raise InputError(
                f"condition {relayed[0]!r}: the built-in relay runs on the controller's loopback and serves only "
                "the embedded engine; with --broker, put a real appliance in the path with setup hooks"
            )
        return CeleryEngine(
            broker,
            [a.name for a in experiment.agents],
            lost_after=experiment.agent_lost_after,
            mixed_versions=mixed_versions,
        )
    return EmbeddedEngine.for_experiment(experiment, influx)


def _measure(
    experiment: spec_module.Experiment,
    spec_path: str | None,
    store_path: str,
    broker: BrokerConfig | None = None,
    influx: InfluxConfig | None = None,
    vsphere: Vsphere | None = None,
    verbose: bool = False,
    resume: str | None = None,
    mixed_versions: bool = False,
) -> dict:
    """Run the experiment with the live display and return its analysed result (sent to InfluxDB too);
    `resume` takes a stopped soak up again instead."""
    from controller.analysis import analyse
    from controller.events import Events
    from controller.hostsources import default_sources
    from controller.influx import InfluxOutput, report_sink
    from controller.report import LiveDisplay
    from controller.runloop import RunLoop

    store = Store(store_path)
    events = Events()
    LiveDisplay(
        console,
        events,
        warmup=experiment.timing.warmup,
        steady=experiment.timing.steady,
        verbose=verbose,
        sla=experiment.sla,
    )
    output = InfluxOutput(influx, events, experiment, errors) if influx else None
    plan_size = len(experiment.conditions) * experiment.repetitions
    if experiment.soak is not None:
        console.print(f"[bold]{experiment.name}[/]: {_soak_line(experiment)}")
    else:
        console.print(
            f"[bold]{experiment.name}[/]: {len(experiment.conditions)} conditions × {experiment.repetitions} "
            f"repetitions = {plan_size} trials of {experiment.timing.duration:g} s, {experiment.order} order"
        )
    engine = _engine(experiment, broker, influx, mixed_versions)
    wired = vsphere_cli.wiring(vsphere, experiment, store) if vsphere is not None else None
    loop = RunLoop(
        experiment,
        store=store,
        engine=engine,
        spec_path=spec_path,
        events=events,
        host_sources=default_sources(
            experiment=experiment, engine=engine, hypervisors=wired.sources if wired else None
        ),
        actions=wired.actions if wired else None,
        place=wired.place if wired else None,
        command=["vtax", *sys.argv[1:]],
        resume=resume,
    )
    try:
        run_id = loop.execute()
    except (KeyboardInterrupt, VtaxError) as exc:
        if output is not None:
            report_sink(output.sink, console, errors)  # what was measured before the stop still reaches InfluxDB
        if isinstance(exc, KeyboardInterrupt):
            errors.print(
                f"vtax: interrupted; teardown hooks ran; run {loop.run_id} kept in {store.path} as interrupted"
            )
            raise typer.Exit(INTERRUPTED) from None
        errors.print(f"vtax: run {loop.run_id} aborted, kept in {store.path}")
        raise
    result = analyse(store, run_id)
    if output is not None:
        output.write_result(result)
        report_sink(output.sink, console, errors)
    return result


def _execute(
    experiment: spec_module.Experiment,
    spec_path: str | None,
    store_path: str,
    json_path: Path | None,
    broker: BrokerConfig | None = None,
    influx: InfluxConfig | None = None,
    vsphere: Vsphere | None = None,
    verbose: bool = False,
    resume: str | None = None,
    mixed_versions: bool = False,
) -> None:
    from controller.report import print_result

    check_writable(json_path)
    result = _measure(experiment, spec_path, store_path, broker, influx, vsphere, verbose, resume, mixed_versions)
    print_result(console, result)
    write_json(json_path, result)
    raise typer.Exit(0 if result["passed"] else 1)


@app.command()
@vsphere_cli.with_vcenter_options
def run(
    spec: Annotated[Path | None, typer.Argument(help="experiment spec (YAML); not with --resume")] = None,
    json_path: JsonOption = None,
    store: StoreOption = DEFAULT_PATH,
    broker: BrokerOption = None,
    broker_certs: BrokerCertsOption = None,
    influx: InfluxOption = None,
    influx_config: InfluxConfigOption = None,
    verbose: VerboseOption = False,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="a stopped soak's run id: go on at the segment after the last one stored"),
    ] = None,
    allow_mixed_versions: MixedVersionsOption = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="keep the agent VMs of the spec's `deploy` block after the run")
    ] = False,
    *,
    vcenter_options: vsphere_cli.VcenterOptions,
) -> None:
    """Run an experiment and print its summary. Exit 1 when an SLA or validity check fails.

    Without --broker, agents run as local processes (embedded engine); with it, the spec's agents are
    `vtax agent` workers registered with that broker (distributed engine). With --vcenter, host counters
    come from vSphere for the hosts running the agents' VMs and the appliance VMs on them. With --resume, a
    soak whose controller died goes on with the spec it was started with.
    """
    experiment, spec_path, resume = _run_spec(spec, resume, store)
    vsphere = vsphere_cli.open_vsphere(experiment, vcenter_options)
    config = broker_settings(broker, broker_certs)
    try:
        if experiment.deploy is not None and resume is None and vsphere is not None:
            fleet = vsphere_cli.run_deployment(vsphere, experiment, config, source=str(spec_path), keep=keep)
        else:  # a resumed soak runs on the agents its spec was given when it started
            fleet = contextlib.nullcontext(experiment)
        with _interruptible(), fleet as deployed:
            _execute(
                deployed,
                spec_path,
                store,
                json_path,
                config,
                influx_settings(influx, influx_config),
                vsphere,
                verbose,
                resume,
                allow_mixed_versions,
            )
    finally:
        if vsphere is not None:
            vsphere.vcenter.close()


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C outside the trials (while a run's agent VMs are made or removed): exit 130 in one line, after
    whatever cleans up has run."""
    try:
        yield
    except KeyboardInterrupt:
        errors.print("vtax: interrupted")
        raise typer.Exit(INTERRUPTED) from None


vsphere_cli.register(app)


def _run_spec(
    spec: Path | None, resume: str | None, store: str
) -> tuple[spec_module.Experiment, str | None, str | None]:
    """The experiment to run and its spec file: the file's, or a resumed soak's as it was started (with the
    soak's full run id)."""
    if resume is None:
        if spec is None:
            raise InputError("give the experiment spec to run (or --resume RUN to go on with a stopped soak)")
        return spec_module.load(spec), str(spec), None
    if spec is not None:
        raise InputError("--resume goes on with the spec the soak was started with: give the run id alone")
    stored = Store(store, create=False).run(resume)
    experiment = spec_module.Experiment.model_validate(stored["spec"])
    if experiment.soak is None:
        raise InputError(f"run {stored['id']} is not a soak: only a soak can be resumed")
    return experiment, stored["spec_path"], stored["id"]


@app.command()
def demo(
    json_path: JsonOption = None,
    store: StoreOption = DEFAULT_PATH,
    influx: InfluxOption = None,
    influx_config: InfluxConfigOption = None,
) -> None:
    """Run the built-in demo: iperf3 over loopback, direct against a userspace relay appliance."""
    from controller.demo import demo_experiment

    _execute(demo_experiment(), None, store, json_path, None, influx_settings(influx, influx_config))


@app.command()
def calibrate(
    spec: Annotated[Path, typer.Argument(help="experiment spec (YAML) whose baseline is the bed")],
    repetitions: Annotated[
        int | None, typer.Option("--repetitions", min=2, max=1000, help="default: the spec's (at least 2)")
    ] = None,
    inject_rate: Annotated[
        float | None,
        typer.Option(
            "--inject-rate",
            min=1,
            max=100_000,
            help="lab only: also run the lab appliance's tbf at this many Mbit/s and measure it back",
        ),
    ] = None,
    json_path: JsonOption = None,
    store: StoreOption = DEFAULT_PATH,
    broker: BrokerOption = None,
    broker_certs: BrokerCertsOption = None,
    allow_mixed_versions: MixedVersionsOption = False,
    verbose: VerboseOption = False,
) -> None:
    """The reference test of the test bed without the device (RFC 9411): the spec's baseline as an A/A pair,
    giving the bed's capacity and the smallest overhead it resolves; with --inject-rate, a known cap measured
    back. Exit 1 when the two runs of the same condition differ (the bed is not stable)."""
    from controller.calibration import calibrate as read_calibration
    from controller.calibration import calibration_experiment, calibration_text
    from controller.report import print_result

    check_writable(json_path)
    given = spec_module.load(spec)
    if given.deploy is not None:
        raise InputError(
            f"{spec}: deploy: calibrate runs on agents that are up; make them first (`vtax deploy`, or a "
            "`vtax run --keep` of this spec) and list them under `agents`"
        )
    experiment = calibration_experiment(given, repetitions or max(2, given.repetitions), inject_rate)
    config = broker_settings(broker, broker_certs)
    result = _measure(experiment, str(spec), store, config, None, None, verbose, mixed_versions=allow_mixed_versions)
    print_result(console, result)
    found = read_calibration(result, experiment, inject_rate)
    for line in calibration_text(found):
        console.print(line)
    write_json(json_path, {**result, "calibration": found})
    raise typer.Exit(1 if found["aa"]["significant"] else 0)


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix of it")],
    influx: InfluxOption = None,
    influx_config: InfluxConfigOption = None,
    store: StoreOption = DEFAULT_PATH,
) -> None:
    """Write a stored run to InfluxDB: samples, host counters, trial markers and KPIs (a backfill)."""
    from agent.sink import InfluxSink
    from controller.analysis import analyse
    from controller.influx import report_sink, run_lines

    config = influx_settings(influx, influx_config)
    if config is None:
        raise InputError("--influx: an InfluxDB URL is required (or VTAX_INFLUX_URL, or url in --influx-config)")
    opened = Store(store, create=False)
    result = analyse(opened, run_id)
    lines = run_lines(opened, result)
    sink = InfluxSink(config.model_copy(update={"spool_dir": config.spool_dir / "export"}))
    sink.submit(lines)
    report_sink(sink, console, errors)
    if sink.stats()["spooled_bytes"]:
        raise InfrastructureError(f"InfluxDB at {config.url} did not take every point")


SHIPPED = {
    "deploy": ("vtax_deploy", ("*.service", "*.example", "grafana/*/*.json", "grafana/*/*/*.yaml")),
    "examples": ("vtax_examples", ("*.yaml",)),
}


@app.command()
def files(
    directory: Annotated[Path, typer.Argument(help="where to write them (created if missing)")],
    force: Annotated[bool, typer.Option("--force", help="overwrite files that exist")] = False,
) -> None:
    """Write out what vtax ships beside the command: the Grafana dashboards and provisioning, the agent's systemd
    unit and environment file (deploy/), and the example specs (examples/)."""
    written = []
    for name, (package, patterns) in SHIPPED.items():
        root = Path(str(importlib.resources.files(package)))
        for source in sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()}):
            target = directory / name / source.relative_to(root)
            if target.exists() and not force:
                raise InputError(f"{target}: exists; give --force to overwrite")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            written.append(target)
    console.print(
        f"wrote {len(written)} files under {directory}: " + ", ".join(str(p.relative_to(directory)) for p in written)
    )


@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="experiment spec (YAML)")]) -> None:
    """Check a spec without running it."""
    from controller.report import duration

    experiment = spec_module.load(spec)
    trials = len(experiment.conditions) * experiment.repetitions
    if experiment.soak is not None:
        console.print(f"{spec}: ok · {_soak_line(experiment)}")
        trials = experiment.soak.segments
    elif experiment.searches:
        from controller.plan import search_lengths

        searches = search_lengths(experiment)
        each = sum(length.expected for length in searches)
        most = sum(length.most for length in searches)
        console.print(
            f"{spec}: ok · {' then '.join(length.what for length in searches)} over {len(experiment.conditions)} "
            f"conditions: about {each} trials each, about {_estimate(experiment, each)} (at most {most} each: "
            f"{_estimate(experiment, most)})"
        )
        trials = len(experiment.conditions) * most
    else:
        console.print(
            f"{spec}: ok · {len(experiment.conditions)} conditions × {experiment.repetitions} repetitions = "
            f"{trials} trials, about {_estimate(experiment, experiment.repetitions)}"
        )
    if experiment.mentions_vsphere:
        from controller.vsphere.perf import REALTIME_INTERVAL_S

        per_trial = max(0.0, REALTIME_INTERVAL_S - experiment.timing.cooldown)
        console.print(
            f"with --vcenter, up to {duration(trials * per_trial + REALTIME_INTERVAL_S)} more: vCenter's "
            f"{REALTIME_INTERVAL_S} s samples are read once over, and a cool-down under {REALTIME_INTERVAL_S} s "
            "makes each trial wait for the one holding its steady phase's end"
        )


def _soak_line(experiment: spec_module.Experiment) -> str:
    """ "a soak of 24 h in 1,440 segments of 60 s, holding base" (and the turns, with several conditions)."""
    from controller.report import duration

    soak = experiment.soak
    assert soak is not None
    held = soak.conditions or [experiment.baseline.name]
    turns = f", in turns of {soak.rotate} segments" if len(held) > 1 else ""
    return (
        f"a soak of {duration(soak.duration)} in {soak.segments:,} segments of {duration(soak.segment)}, holding "
        f"{', '.join(held)}{turns}"
    )


def _estimate(experiment: spec_module.Experiment, repetitions: int) -> str:
    """How long a run of the spec with this many repetitions takes, roughly (1 s per trial of overhead)."""
    from controller.report import duration

    trials = len(experiment.conditions) * repetitions
    return duration(trials * (experiment.timing.duration + experiment.lead + 1))


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="experiment spec (YAML)")],
    detect: Annotated[str, typer.Option("--detect", help="the smallest change to find, e.g. 3%")],
    from_run: Annotated[
        str | None,
        typer.Option("--from", help="the run whose noise to plan from (default: the newest with these workloads)"),
    ] = None,
    json_path: JsonOption = None,
    store: StoreOption = DEFAULT_PATH,
) -> None:
    """How many repetitions the spec needs to find a change of --detect with 80 % power, from the noise a
    previous run of its workloads and timing showed (a run of the spec, or an A/A run)."""
    from controller import power
    from controller.report import print_plan

    check_writable(json_path)
    effect = power.parse_effect(detect)
    experiment = spec_module.load(spec)
    planned = power.plan(Store(store, create=False), experiment, str(spec), effect, from_run)
    print_plan(console, planned, experiment.repetitions)
    headline = next((m for m in planned["metrics"] if m["repetitions"] is not None), None)
    if headline is not None:
        console.print(
            f"to see {effect:g} % in {headline['metric']}: {headline['repetitions']} repetitions, about "
            f"{_estimate(experiment, headline['repetitions'])} (the spec has {experiment.repetitions})"
        )
    write_json(json_path, dict(planned))


@app.command()
def schema() -> None:
    """Print the spec's JSON Schema, for editors."""
    print(json.dumps(spec_module.schema(), indent=2))


runs_app = typer.Typer(help="List stored runs, newest first; `rm` and `prune` delete them.")
app.add_typer(runs_app, name="runs")


@runs_app.callback(invoke_without_command=True)
def runs(
    ctx: typer.Context,
    store: StoreOption = DEFAULT_PATH,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the 50 newest stored runs (id, name, engine, status, trials, created)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = Store(store).runs() if Path(store).exists() else []
    if as_json:
        print(json.dumps([{k: v for k, v in r.items() if k != "spec_json"} for r in rows], indent=2))
        return
    table = Table("run", "name", "engine", "status", "trials", "created")
    for row in rows:
        created = datetime.fromtimestamp(row["created"]).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(row["id"], row["name"], row["engine"], row["status"], str(row["trials"]), created)
    console.print(table if rows else f"no runs in {store}")


@runs_app.command("rm")
def runs_rm(
    run_ids: Annotated[list[str], typer.Argument(help="run ids or unique prefixes")],
    store: StoreOption = DEFAULT_PATH,
) -> None:
    """Delete runs and everything measured in them."""
    opened = Store(store, create=False)
    for run_id in [opened.run(given)["id"] for given in run_ids]:  # every id resolves before any is deleted
        opened.delete_run(run_id)
        console.print(f"removed run {run_id}")


@runs_app.command("prune")
def runs_prune(
    aborted: Annotated[bool, typer.Option("--aborted", help="delete the runs that were aborted")] = False,
    store: StoreOption = DEFAULT_PATH,
) -> None:
    """Delete runs by status: `--aborted` removes every run stopped by a hook, a refusal or an unreachable
    broker (such runs often hold no trial)."""
    if not aborted:
        raise InputError("runs prune: say which runs, e.g. --aborted")
    opened = Store(store, create=False)
    gone = opened.runs(limit=None, status="aborted")
    for row in gone:
        opened.delete_run(row["id"])
    console.print(f"removed {len(gone)} aborted run(s)")


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix of it")],
    json_path: JsonOption = None,
    store: StoreOption = DEFAULT_PATH,
    verbose: VerboseOption = False,
    segments: Annotated[bool, typer.Option("--segments", help="a soak: list every segment's values first")] = False,
) -> None:
    """Print a stored run's summary again, recomputed from the store; with --verbose, every hook's output first."""
    from controller.analysis import analyse
    from controller.report import print_hook, print_result
    from controller.soakreport import segments_table

    check_writable(json_path)
    opened = Store(store, create=False)
    result = analyse(opened, run_id)
    if segments and result["soak"] is None:
        raise InputError(f"run {result['run_id']} is not a soak: it has no segments (its trials: `vtax show` alone)")
    if verbose:
        for trial_idx, hook in opened.hook_runs(result["run_id"]):
            print_hook(console, trial_idx, hook)
    if segments:
        console.print(segments_table(result))
    print_result(console, result)
    write_json(json_path, result)


@app.command()
def report(
    run_ids: Annotated[list[str], typer.Argument(help="run ids or unique prefixes: one run, or several of one spec")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the HTML file to write")] = Path("report.html"),
    store: StoreOption = DEFAULT_PATH,
) -> None:
    """Write one self-contained HTML page (opens offline: every script inline) of a run's result: verdicts,
    overheads with CIs, every repetition, every second, ranking, validity and provenance."""
    from controller import htmlreport
    from controller.analysis import analyse_study

    check_writable(output, "--output")
    opened = Store(store, create=False)
    study, runs = analyse_study(opened, run_ids)
    spec = spec_module.Experiment.model_validate(study["spec"])
    page = htmlreport.render(opened, study, runs, spec_module.metric_catalogue(spec))
    output.write_text(page, encoding="utf-8")
    console.print(f"wrote {output} ({len(page.encode()) / 1e6:.1f} MB, opens offline)")


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="the run to compare against (before), id or unique prefix")],
    run_b: Annotated[str, typer.Argument(help="the run that may have changed (after)")],
    json_path: JsonOption = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="also write the comparison as an offline HTML page")
    ] = None,
    store: StoreOption = DEFAULT_PATH,
) -> None:
    """Compare two runs of a spec (before and after an update, two test beds): each metric's change under each
    condition with its CI, and what differs in how the runs were made (spec, machines, versions, placement)."""
    from controller.comparison import compare_runs
    from controller.report import print_comparison

    check_writable(json_path)
    check_writable(html, "--html")
    comparison = compare_runs(Store(store, create=False), run_a, run_b)
    print_comparison(console, comparison)
    write_json(json_path, dict(comparison))
    if html is not None:
        from controller import htmlreport

        page = htmlreport.render_comparison(comparison)
        html.write_text(page, encoding="utf-8")
        console.print(f"wrote {html} ({len(page.encode()) / 1e6:.1f} MB, opens offline)")


@app.command("import")
def import_(
    side_file: Annotated[Path, typer.Argument(help="a side file a failing store left (NAME.unsaved-….jsonl)")],
    store: StoreOption = DEFAULT_PATH,
) -> None:
    """Add what a run measured while its store could not be written (its side file) to a store."""
    opened = Store(store)
    runs = opened.replay(side_file)
    console.print(f"added {side_file} to {store}: run(s) {', '.join(runs) or 'none'}; see `vtax show RUN`")


@app.command()
def agent(
    broker: BrokerOption = None,
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name",
            envvar="VTAX_AGENT_NAME",
            help="this agent's name, as specs refer to it (repeatable); default: guestinfo.vtax.name",
        ),
    ] = None,
    zone: Annotated[str | None, typer.Option("--zone", envvar="VTAX_ZONE", help="security zone of this VM")] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow", envvar="VTAX_ALLOW", help="network this agent may send load to (repeatable); default: loopback"
        ),
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", envvar="VTAX_ADDRESS", help="address its servers listen on")
    ] = None,
    locustfiles: Annotated[
        Path | None,
        typer.Option("--locustfiles", envvar="VTAX_LOCUSTFILES", help="directory of custom locustfiles specs may name"),
    ] = None,
    vm_uuid: Annotated[
        str | None,
        typer.Option(
            "--vm-uuid",
            envvar="VTAX_VM_UUID",
            help="this VM's BIOS UUID, where the agent cannot read /sys/class/dmi/id/product_uuid (not root)",
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            envvar="VTAX_CONCURRENCY",
            min=1,
            max=4096,
            help="load tasks this agent process runs at once (all its --name's together); more are refused",
        ),
    ] = DEFAULT_TASK_SLOTS,
    max_gbps: Annotated[
        float | None,
        typer.Option(
            "--max-gbps",
            envvar="VTAX_MAX_GBPS",
            min=0.001,
            help="most network load one task may send (iperf3's streams × bitrate); more, or unpaced, is refused",
        ),
    ] = None,
    max_rps: Annotated[
        float | None,
        typer.Option(
            "--max-rps",
            envvar="VTAX_MAX_RPS",
            min=1,
            help="most HTTP requests per second one task may send; more, or unpaced, is refused",
        ),
    ] = None,
    broker_certs: BrokerCertsOption = None,
    influx: InfluxOption = None,
    influx_config: InfluxConfigOption = None,
) -> None:
    """Run an agent: a Celery worker that executes load tasks from its own queue on the broker."""
    from agent.instance import InstanceFileError, instance_settings
    from agent.safety import RateLimits
    from agent.worker import run_agent
    from controller.distributed import connect

    try:
        given = instance_settings()  # what `vtax deploy` wrote into this VM's configuration; flags and VTAX_* win
    except InstanceFileError as exc:
        raise InputError(str(exc)) from None
    broker = broker or given.get("broker")
    name = name or ([given["name"]] if "name" in given else None)
    zone = zone or given.get("zone")
    allow = allow or given.get("allow", "").split() or None
    address = address or given.get("address")
    influx = influx or given.get("influx")
    if not broker or not name:
        missing = "--broker" if not broker else "--name"
        raise InputError(
            f"{missing}: missing; give it, its VTAX_* variable, guestinfo.vtax.{missing[2:]} or the instance file "
            "(vtax deploy)"
        )
    for each in name:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", each):
            raise InputError(f"--name: {each!r} is not a valid agent name (letters, digits, _ . -)")
    if locustfiles is not None and not locustfiles.is_dir():
        raise InputError(f"--locustfiles: {locustfiles} is not a directory")
    if vm_uuid is not None and not re.fullmatch(r"[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}", vm_uuid):
        raise InputError(f"--vm-uuid: {vm_uuid!r} is not a UUID (8-4-4-4-12 hex digits)")
    config = broker_settings(broker, broker_certs)
    assert config is not None
    connect(config, "agent")
    try:
        run_agent(
            broker=config,
            names=name,
            zone=zone,
            allow=allow or list(LOOPBACK),
            address=address,
            vm_uuid=vm_uuid,
            locustfiles=locustfiles,
            influx=influx_settings(influx, influx_config),
            concurrency=concurrency,
            limits=RateLimits(max_gbps=max_gbps, max_rps=max_rps),
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


@app.command()
def agents(
    broker: BrokerOption,
    broker_certs: BrokerCertsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the agents whose heartbeat is current, with their identity."""
    from controller.distributed import registered_agents

    config = broker_settings(broker, broker_certs)
    assert config is not None  # --broker is required here
    found = registered_agents(config)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    table = Table("name", "zone", "host", "address", "cores", "kernel", "iperf3", "allow", "signed", "heartbeat")
    for a in found:
        age = f"{time.time() - a['heartbeat']:.0f} s ago"
        table.add_row(
            a["name"],
            a["zone"] or "",
            a["hostname"],
            a.get("address") or "",
            str(a["cores"]),
            a["kernel"],
            a["iperf3"] or "missing",
            ", ".join(a["allow"]),
            "yes" if a.get("signed") else "no",
            age,
        )
    console.print(table if found else f"no agents registered with {config.url}")


certs_app = typer.Typer(
    help="Key material of a secure deployment: TLS for Redis, an ACL user per side, signed tasks.",
    no_args_is_help=True,
)


@certs_app.command("init")
def certs_init(
    directory: Annotated[Path, typer.Argument(help="where to write it: a new or empty directory")],
    host: Annotated[
        list[str],
        typer.Option(
            "--host", help="the broker's name or address as clients reach it (repeatable): in its certificate"
        ),
    ],
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="the broker's TLS port")] = 6380,
    prefix: Annotated[
        str, typer.Option("--prefix", help="this installation's key prefix, where several share one Redis")
    ] = "",
) -> None:
    """Make a CA, the broker's TLS certificate, the controller's signing certificate, the agents' trust, a
    Redis ACL file and each side's environment file (docs/how-to/secure-deployment.md)."""
    from agent.settings import PREFIX_PATTERN
    from controller import certs

    if not re.fullmatch(PREFIX_PATTERN, prefix):
        raise InputError(f"--prefix: {prefix!r}: expected up to 64 letters, digits, _ . : -")
    made = certs.init(directory, hosts=host, prefix=prefix, broker_url=f"rediss://{host[0]}:{port}/0", port=port)
    for what, path in made.items():
        console.print(f"{what}: {path}")
    console.print(
        f"expiries: CA {certs.CA_DAYS} days, the others {certs.LEAF_DAYS} days; `vtax certs check {directory}`"
    )


@certs_app.command("renew")
def certs_renew(
    old: Annotated[Path, typer.Argument(help="a directory `vtax certs init` made, with its ca/ca.key")],
    new: Annotated[Path, typer.Argument(help="where to write the renewed deployment: a new or empty directory")],
) -> None:
    """Fresh keys and certificates from the same CA into NEW, the same ACL users and passwords; NEW's agents
    trust both the old and the new controller certificate, so they can be rolled out first (rotation:
    docs/how-to/secure-deployment.md#rotating-certificates)."""
    from controller import certs

    for what, path in certs.renew(old, new).items():
        console.print(f"{what}: {path}")


@certs_app.command("check")
def certs_check(
    directory: Annotated[Path, typer.Argument(help="a directory `vtax certs init` made, or any one side's")],
    warn_days: Annotated[int, typer.Option("--warn-days", min=0, help="say so this many days ahead")] = 30,
    as_json: AsJsonOption = False,
) -> None:
    """What expires when. Exit 1 when a certificate has expired, expires within --warn-days, or was not signed
    by the directory's CA."""
    from controller import certs

    found = certs.check(directory, warn_days=warn_days)
    if as_json:
        print(json.dumps(found, indent=2))
    else:
        table = Table("certificate", "subject", "expires (UTC)", "days left", "status")
        for cert in found:
            table.add_row(
                cert["path"], cert["subject"], cert["not_after"][:16], f"{cert['days_left']:.0f}", cert["status"]
            )
        console.print(table)
    raise typer.Exit(1 if any(cert["status"] != "ok" for cert in found) else 0)


audit_app = typer.Typer(
    help="Audit the virtual infrastructure: where security zones share hosts.", no_args_is_help=True
)


@audit_app.command("zones")
@vsphere_cli.with_vcenter_options
def audit_zones(
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="YAML policy: where zones come from, which VMs are appliances, which co-residencies are allowed "
            "(default: zones from the vtax.zone attribute, none allowed)",
        ),
    ] = None,
    days: Annotated[int, typer.Option("--days", min=0, max=3650, help="vCenter: migration history to replay")] = 30,
    broker: BrokerOption = None,
    broker_certs: BrokerCertsOption = None,
    as_json: AsJsonOption = False,
    *,
    vcenter_options: vsphere_cli.VcenterOptions,
) -> None:
    """Hosts that carry VMs of more than one security zone, those of them without an appliance, cluster rules
    that let zones meet, and migrations of the last --days that joined zones: from vCenter, or (--broker) from
    the agents on Linux/KVM hypervisors and in their guests. Exit 1 when the policy is violated, 0 when
    everything found is allowed."""
    from controller.report import print_zone_audit
    from controller.zones import audit_agents, load_policy

    rules = load_policy(policy)
    shown = str(policy) if policy else None
    vsphere = vsphere_cli.open_vsphere(None, vcenter_options)
    config = broker_settings(broker, broker_certs)
    if vsphere is not None:
        from controller.vsphere.audit import audit_vcenter

        with vsphere.vcenter:
            found = audit_vcenter(vsphere.vcenter, rules, days=days, policy_path=shown)
    elif config is not None:
        from controller.distributed import registered_agents

        found = audit_agents(registered_agents(config), rules, policy_path=shown)
    else:
        raise InputError("audit zones: give --vcenter, or --broker for the agents of Linux/KVM hypervisors")
    if as_json:
        print(json.dumps(found, indent=2))
    else:
        print_zone_audit(console, found)
    raise typer.Exit(1 if found["violations"] else 0)


app.add_typer(certs_app, name="certs")
app.add_typer(audit_app, name="audit")
app.add_typer(lab_app, name="lab")


def main() -> None:
    try:
        app()
    except VtaxError as exc:
        errors.print(f"vtax: error: {redact(str(exc))}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except sqlite3.Error as exc:  # a store that fails under a read: one line, an infrastructure failure
        errors.print(f"vtax: error: run store: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(3)
