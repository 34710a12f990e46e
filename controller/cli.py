"""The `vtax` command line."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agent.points import kpi_lines
from agent.safety import LOOPBACK
from agent.sink import InfluxConfig, InfluxSink, load_config
from controller import lab
from controller import spec as spec_module
from controller.analysis import analyse
from controller.demo import demo_experiment
from controller.distributed import CeleryEngine, connect, list_agents
from controller.engine import EmbeddedEngine, Engine
from controller.errors import InfrastructureError, InputError, VtaxError
from controller.events import Events
from controller.export import run_lines
from controller.report import LiveDisplay, print_result
from controller.runloop import RunLoop
from controller.store import DEFAULT_PATH, Store
from controller.vcenter import Vcenter
from controller.vcenter import load_config as vcenter_config
from controller.vperf import REALTIME_INTERVAL_S
from controller.vsphere import Vsphere, collect_missing, guest_agents

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
BrokerOption = Annotated[
    str | None, typer.Option("--broker", envvar="VTAX_BROKER", help="Redis URL of the distributed engine")
]
InfluxOption = Annotated[
    str | None, typer.Option("--influx", help="InfluxDB URL to stream to (or VTAX_INFLUX_URL; settings: README)")
]
InfluxConfigOption = Annotated[
    Path | None,
    typer.Option("--influx-config", envvar="VTAX_INFLUX_CONFIG", help="YAML file of InfluxDB settings"),
]
JsonOption = Annotated[Path | None, typer.Option("--json", help="write the run's result object to this file")]
VcenterOption = Annotated[
    str | None,
    typer.Option("--vcenter", help="vCenter/ESXi URL: host counters, inventory, vSphere hooks (or VTAX_VCENTER_URL)"),
]
VcenterConfigOption = Annotated[
    Path | None,
    typer.Option("--vcenter-config", envvar="VTAX_VCENTER_CONFIG", help="YAML file of vCenter settings"),
]
VcenterUserOption = Annotated[str | None, typer.Option("--vcenter-user", help="or VTAX_VCENTER_USER")]
VcenterPasswordOption = Annotated[
    str | None, typer.Option("--vcenter-password", help="prefer VTAX_VCENTER_PASSWORD: flags show in `ps`")
]
VcenterCaOption = Annotated[
    Path | None, typer.Option("--vcenter-ca-bundle", help="PEM CA bundle that signed vCenter's certificate")
]
VcenterInsecureOption = Annotated[
    bool | None, typer.Option("--vcenter-insecure", help="do not verify vCenter's TLS certificate (labs only)")
]
INTERRUPTED = 130


def _check_writable(path: Path | None) -> None:
    if path is not None and not path.absolute().parent.is_dir():
        raise InputError(f"{path}: --json: directory {path.absolute().parent} does not exist")


def _write_json(path: Path | None, result: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"result written to {path}")


def _influx(url: str | None, config_file: Path | None) -> InfluxConfig | None:
    try:
        return load_config(url, config_file)
    except ValueError as exc:
        raise InputError(str(exc)) from None


NO_VCENTER = "--vcenter: a vCenter URL is required (or VTAX_VCENTER_URL, or url in --vcenter-config)"


def _vsphere(
    experiment: spec_module.Experiment | None,
    url: str | None,
    config_file: Path | None,
    user: str | None,
    password: str | None,
    ca_bundle: Path | None,
    insecure: bool | None,
) -> Vsphere | None:
    """The run's vSphere session when a vCenter is configured; an error when the spec needs one and none is."""
    config = vcenter_config(url, config_file, user=user, password=password, ca_bundle=ca_bundle, insecure=insecure)
    if config is None:
        actions = experiment.vsphere_actions() if experiment is not None else []
        if actions:
            condition, stage, action = actions[0]
            raise InputError(f"condition {condition.name!r} {stage}: {action} needs --vcenter (or VTAX_VCENTER_URL)")
        return None
    vcenter = Vcenter(config=config)
    if insecure or config.insecure:
        errors.print(f"vtax: warning: not verifying the TLS certificate of {config.url}")
    return Vsphere(vcenter=vcenter, spec=experiment.vsphere if experiment else spec_module.VsphereSpec())


def _report_sink(sink: InfluxSink) -> None:
    """What reached InfluxDB; anything left is in the spool, never silently gone."""
    sink.close(timeout=30)
    stats = sink.stats()
    console.print(f"InfluxDB: {stats['sent']} points written, {stats['rejected']} rejected")
    if stats["spooled_bytes"] or stats["spool_dropped"]:
        errors.print(
            f"vtax: {stats['spooled_bytes']} bytes of points wait in {sink.config.spool_dir} (last error: "
            f"{stats['last_error']}); they are sent at the next run, or with `vtax export`"
        )


def _engine(experiment: spec_module.Experiment, broker: str | None, influx: InfluxConfig | None) -> Engine:
    if broker:
        relayed = [c.name for c in experiment.conditions if c.appliance == "relay"]
        if relayed:
            raise InputError(
                f"condition {relayed[0]!r}: the built-in relay runs on the controller's loopback and serves only "
                "the embedded engine; with --broker, put a real appliance in the path with setup hooks"
            )
        return CeleryEngine(broker, [a.name for a in experiment.agents])
    return EmbeddedEngine.for_experiment(experiment, influx)


def _execute(
    experiment: spec_module.Experiment,
    spec_path: str | None,
    store_path: str,
    json_path: Path | None,
    broker: str | None = None,
    influx: InfluxConfig | None = None,
    vsphere: Vsphere | None = None,
) -> None:
    _check_writable(json_path)
    store = Store(store_path)
    sink = InfluxSink(influx.model_copy(update={"spool_dir": influx.spool_dir / "controller"})) if influx else None
    events = Events()
    LiveDisplay(console, events, warmup=experiment.timing.warmup, steady=experiment.timing.steady)
    plan_size = len(experiment.conditions) * experiment.repetitions
    console.print(
        f"[bold]{experiment.name}[/]: {len(experiment.conditions)} conditions × {experiment.repetitions} repetitions "
        f"= {plan_size} trials of {experiment.timing.duration:g} s, {experiment.order} order"
    )
    engine = _engine(experiment, broker, influx)
    loop = RunLoop(
        experiment, store=store, engine=engine, spec_path=spec_path, events=events, sink=sink, vsphere=vsphere
    )
    try:
        run_id = loop.execute()
    except (KeyboardInterrupt, VtaxError) as exc:
        if sink is not None:
            _report_sink(sink)  # what was measured before the stop still reaches InfluxDB
        if isinstance(exc, KeyboardInterrupt):
            errors.print(
                f"vtax: interrupted; teardown hooks ran; run {loop.run_id} kept in {store.path} as interrupted"
            )
            raise typer.Exit(INTERRUPTED) from None
        errors.print(f"vtax: run {loop.run_id} aborted, kept in {store.path}")
        raise
    result = analyse(store, run_id)
    if sink is not None:
        sink.submit(kpi_lines(result, time.time()))
        _report_sink(sink)
    print_result(console, result)
    _write_json(json_path, result)
    raise typer.Exit(0 if result["passed"] else 1)


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="experiment spec (YAML)")],
    json_path: JsonOption = None,
    store: StoreOption = DEFAULT_PATH,
    broker: BrokerOption = None,
    influx: InfluxOption = None,
    influx_config: InfluxConfigOption = None,
    vcenter: VcenterOption = None,
    vcenter_config_file: VcenterConfigOption = None,
    vcenter_user: VcenterUserOption = None,
    vcenter_password: VcenterPasswordOption = None,
    vcenter_ca_bundle: VcenterCaOption = None,
    vcenter_insecure: VcenterInsecureOption = None,
) -> None:
    """Run an experiment and print its summary. Exit 1 when an SLA or validity check fails.

    Without --broker, agents run as local processes (embedded engine); with it, the spec's agents are
    `vtax agent` workers registered with that broker (distributed engine). With --vcenter, host counters
    come from vSphere for the hosts running the agents' VMs and the appliance VMs on them.
    """
    experiment = spec_module.load(spec)
    vsphere = _vsphere(
        experiment, vcenter, vcenter_config_file, vcenter_user, vcenter_password, vcenter_ca_bundle, vcenter_insecure
    )
    try:
        _execute(experiment, str(spec), store, json_path, broker, _influx(influx, influx_config), vsphere)
    finally:
        if vsphere is not None:
            vsphere.vcenter.close()


@app.command()
def collect(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix of it")],
    store: StoreOption = DEFAULT_PATH,
    vcenter: VcenterOption = None,
    vcenter_config_file: VcenterConfigOption = None,
    vcenter_user: VcenterUserOption = None,
    vcenter_password: VcenterPasswordOption = None,
    vcenter_ca_bundle: VcenterCaOption = None,
    vcenter_insecure: VcenterInsecureOption = None,
) -> None:
    """Read vCenter's counters for the trials of a --vcenter run that have none (vCenter was unreachable at the
    time), then print the summary again. Within about an hour realtime data is read; later, 300 s samples."""
    opened = Store(store)
    run = opened.run(run_id)
    experiment = spec_module.Experiment.model_validate(run["spec"])
    vsphere = _vsphere(
        experiment, vcenter, vcenter_config_file, vcenter_user, vcenter_password, vcenter_ca_bundle, vcenter_insecure
    )
    if vsphere is None:
        raise InputError(NO_VCENTER)
    with vsphere.vcenter:
        filled = collect_missing(vsphere=vsphere, store=opened, run_id=run["id"], seconds=experiment.timing.duration)
    console.print(f"vCenter counters read for {len(filled)} trial(s): {', '.join(map(str, filled)) or 'none missing'}")
    print_result(console, analyse(opened, run["id"]))


@app.command()
def inventory(
    spec: Annotated[
        Path | None, typer.Argument(help="experiment spec whose agents to map (default: --broker's)")
    ] = None,
    broker: BrokerOption = None,
    vcenter: VcenterOption = None,
    vcenter_config_file: VcenterConfigOption = None,
    vcenter_user: VcenterUserOption = None,
    vcenter_password: VcenterPasswordOption = None,
    vcenter_ca_bundle: VcenterCaOption = None,
    vcenter_insecure: VcenterInsecureOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Show where each agent lives in vSphere: its VM (and how it was found), host, cluster, zone, and the
    appliance VMs on those hosts. Exit 2 when an agent has no VM."""
    experiment = spec_module.load(spec) if spec is not None else None
    vsphere = _vsphere(
        experiment, vcenter, vcenter_config_file, vcenter_user, vcenter_password, vcenter_ca_bundle, vcenter_insecure
    )
    if vsphere is None:
        raise InputError(NO_VCENTER)
    with vsphere.vcenter:
        registered = {a["name"]: a for a in list_agents(connect(broker))} if broker else {}
        if experiment is not None:
            wanted = guest_agents(experiment, registered.get)
        elif registered:
            wanted = list(registered.values())
        else:
            raise InputError("inventory: give a spec, or --broker to map the agents registered there")
        try:
            vsphere.map(wanted)
            missing = ""
        except InputError as exc:
            missing = str(exc)
        placed = vsphere.describe()
        rows = [{"agent": name, **row} for name, row in placed["agents"].items()]
        if as_json:
            print(json.dumps({**placed, "agents": rows}, indent=2))
        else:
            console.print(f"{placed['server']}: {len(vsphere.inventory.hosts)} hosts, {len(vsphere.inventory.vms)} VMs")
            columns = ("agent", "vm", "found_by", "host", "cluster", "zone", "power")
            table = Table(*(c.replace("_", " ") for c in columns))
            for row in rows:
                table.add_row(*(str(row[c] or "") for c in columns))
            console.print(table)
            appliances = Table("appliance VM", "host", "power")
            for row in placed["appliances"]:
                appliances.add_row(row["vm"], row["host"] or "", row["power"])
            console.print(
                appliances if placed["appliances"] else "no appliance VMs on these hosts (vsphere.appliances)"
            )
        if missing:
            raise InputError(missing)


@app.command()
def demo(
    json_path: JsonOption = None,
    store: StoreOption = DEFAULT_PATH,
    influx: InfluxOption = None,
    influx_config: InfluxConfigOption = None,
) -> None:
    """Run the built-in demo: iperf3 over loopback, direct against a userspace relay appliance."""
    _execute(demo_experiment(), None, store, json_path, None, _influx(influx, influx_config))


@app.command()
def export(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix of it")],
    influx: InfluxOption = None,
    influx_config: InfluxConfigOption = None,
    store: StoreOption = DEFAULT_PATH,
) -> None:
    """Write a stored run to InfluxDB: samples, host counters, trial markers and KPIs (a backfill)."""
    config = _influx(influx, influx_config)
    if config is None:
        raise InputError("--influx: an InfluxDB URL is required (or VTAX_INFLUX_URL, or url in --influx-config)")
    opened = Store(store)
    result = analyse(opened, run_id)
    lines = run_lines(opened, result)
    sink = InfluxSink(config.model_copy(update={"spool_dir": config.spool_dir / "export"}))
    sink.submit(lines)
    _report_sink(sink)
    if sink.stats()["spooled_bytes"]:
        raise InfrastructureError(f"InfluxDB at {config.url} did not take every point")


@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="experiment spec (YAML)")]) -> None:
    """Check a spec without running it."""
    experiment = spec_module.load(spec)
    trials = len(experiment.conditions) * experiment.repetitions
    console.print(
        f"{spec}: ok · {len(experiment.conditions)} conditions × {experiment.repetitions} repetitions = {trials} "
        f"trials, about {trials * (experiment.timing.duration + experiment.timing.lead + 1):.0f} s"
    )
    if experiment.mentions_vsphere:
        per_trial = max(0.0, REALTIME_INTERVAL_S - experiment.timing.cooldown)
        console.print(
            f"with --vcenter, up to {trials * per_trial + REALTIME_INTERVAL_S:.0f} s more: vCenter's "
            f"{REALTIME_INTERVAL_S} s samples are read once over, and a cool-down under {REALTIME_INTERVAL_S} s "
            "makes each trial wait for the one holding its steady phase's end"
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


@app.command()
def agent(
    broker: Annotated[
        str, typer.Option("--broker", envvar="VTAX_BROKER", help="Redis URL, e.g. redis://10.0.0.5:6379/0")
    ],
    name: Annotated[
        list[str],
        typer.Option("--name", envvar="VTAX_AGENT_NAME", help="this agent's name, as specs refer to it (repeatable)"),
    ],
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
    influx: InfluxOption = None,
    influx_config: InfluxConfigOption = None,
) -> None:
    """Run an agent: a Celery worker that executes load tasks from its own queue on the broker."""
    from agent.worker import run_agent

    for each in name:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", each):
            raise InputError(f"--name: {each!r} is not a valid agent name (letters, digits, _ . -)")
    if locustfiles is not None and not locustfiles.is_dir():
        raise InputError(f"--locustfiles: {locustfiles} is not a directory")
    if vm_uuid is not None and not re.fullmatch(r"[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}", vm_uuid):
        raise InputError(f"--vm-uuid: {vm_uuid!r} is not a UUID (8-4-4-4-12 hex digits)")
    connect(broker)
    try:
        run_agent(
            broker=broker,
            names=name,
            zone=zone,
            allow=allow or list(LOOPBACK),
            address=address,
            vm_uuid=vm_uuid,
            locustfiles=locustfiles,
            influx=_influx(influx, influx_config),
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


@app.command()
def agents(
    broker: Annotated[str, typer.Option("--broker", envvar="VTAX_BROKER", help="Redis URL")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the agents whose heartbeat is current, with their identity."""
    found = list_agents(connect(broker))
    if as_json:
        print(json.dumps(found, indent=2))
        return
    table = Table("name", "zone", "host", "address", "cores", "kernel", "iperf3", "allow", "heartbeat")
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
            age,
        )
    console.print(table if found else f"no agents registered with {broker}")


lab_app = typer.Typer(help="A lab of network namespaces as guest VMs, with an appliance between them (root).")
app.add_typer(lab_app, name="lab")


@lab_app.command("up")
def lab_up(
    guests: Annotated[int, typer.Option("--guests", help="guest namespaces; odd ones in zone a, even in zone b")] = 2,
    appliance: Annotated[bool, typer.Option("--appliance", help="start with the appliance on (conntrack)")] = False,
    agents: Annotated[bool, typer.Option("--agents", help="also start a redis-server and one agent per guest")] = False,
    broker_port: Annotated[int, typer.Option("--broker-port", help="redis-server port with --agents")] = 6390,
) -> None:
    """Create guest namespaces on 198.18.0.0/15 and the appliance namespace that routes between them."""
    state = lab.up(guests=guests, appliance=appliance, agents=agents, broker_port=broker_port)
    table = Table("guest", "namespace", "zone", "address", "management")
    for i in range(1, guests + 1):
        g = lab.Guest(index=i)
        table.add_row(g.name, g.netns, g.zone, g.address, g.mgmt_address)
    console.print(table)
    console.print(f"appliance namespace {lab.APPLIANCE} routes 198.18.1.0/24 ↔ 198.18.2.0/24")
    if agents:
        console.print(f"started redis-server and {guests} agents; broker {state['broker']}; logs in {lab.STATE_DIR}")
        console.print(f"  vtax agents --broker {state['broker']}")


@lab_app.command("down")
def lab_down() -> None:
    """Remove every namespace, link and process the lab made (also after a crash); idempotent."""
    removed = lab.down()
    console.print("\n".join(removed) if removed else "nothing to remove")


@lab_app.command("appliance")
def lab_appliance(
    rules: Annotated[
        int | None, typer.Option("--rules", min=0, max=100_000, help="non-matching nftables rules")
    ] = None,
    delay: Annotated[float | None, typer.Option("--delay", min=0, help="one-way delay A→B, ms")] = None,
    rate: Annotated[float | None, typer.Option("--rate", min=0.1, help="rate limit, Mbit/s")] = None,
    cpu: Annotated[
        int | None,
        typer.Option(
            "--cpu", min=0, help="do the forwarding work on this CPU (RPS), so it shows as that CPU's softirq"
        ),
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="remove rules, delay, rate limit and steering")] = False,
) -> None:
    """Set the appliance to exactly what the options say (no option: conntrack on, no rules)."""
    if off and any(v is not None for v in (rules, delay, rate, cpu)):
        raise InputError("--off excludes --rules, --delay, --rate and --cpu")
    if off:
        applied = lab.configure_appliance(rules=None, delay_ms=None, rate_mbit=None)
    else:
        applied = lab.configure_appliance(rules=0 if rules is None else rules, delay_ms=delay, rate_mbit=rate, cpu=cpu)
    console.print("appliance: " + (", ".join(applied) if applied else "off (plain routing)"))


@lab_app.command("status")
def lab_status() -> None:
    """What the lab is now."""
    print(json.dumps(lab.status(), indent=2))


def main() -> None:
    try:
        app()
    except VtaxError as exc:
        errors.print(f"vtax: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
