"""The vSphere wing's command line: its six connection options as one reusable group, what it hands a run
(host-counter source, hook actions, placement), and its own commands, `vtax collect` and `vtax inventory`."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import secrets
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agent.settings import BrokerConfig
from controller.errors import InfrastructureError, InputError
from controller.options import (
    AsJsonOption,
    BrokerCertsOption,
    BrokerOption,
    StoreOption,
    broker_settings,
    console,
    errors,
)
from controller.spec import AgentSpec, Experiment, VsphereSpec, load, with_agents
from controller.store import DEFAULT_PATH, Store

if TYPE_CHECKING:  # pyVmomi, Celery and scipy load only in the commands that use them (see controller/cli.py)
    from controller.hooks import ActionHandler
    from controller.hostsources import HostCounterSource
    from controller.runloop import Placer
    from controller.vsphere.deploy import Clone, Created, Deployer
    from controller.vsphere.session import Vsphere

NO_VCENTER = "--vcenter: a vCenter URL is required (or VTAX_VCENTER_URL, or url in --vcenter-config)"


@dataclass(frozen=True, kw_only=True)
class VcenterOptions:
    """The vCenter options of a command, as one value."""

    vcenter: Annotated[
        str | None,
        typer.Option(
            "--vcenter", help="vCenter/ESXi URL: host counters, inventory, vSphere hooks (or VTAX_VCENTER_URL)"
        ),
    ] = None
    vcenter_config: Annotated[
        Path | None,
        typer.Option("--vcenter-config", envvar="VTAX_VCENTER_CONFIG", help="YAML file of vCenter settings"),
    ] = None
    vcenter_user: Annotated[str | None, typer.Option("--vcenter-user", help="or VTAX_VCENTER_USER")] = None
    vcenter_password: Annotated[
        str | None, typer.Option("--vcenter-password", help="prefer VTAX_VCENTER_PASSWORD: flags show in `ps`")
    ] = None
    vcenter_ca_bundle: Annotated[
        Path | None, typer.Option("--vcenter-ca-bundle", help="PEM CA bundle that signed vCenter's certificate")
    ] = None
    vcenter_insecure: Annotated[
        bool | None, typer.Option("--vcenter-insecure", help="do not verify vCenter's TLS certificate (labs only)")
    ] = None


_OPTION_FIELDS = [f.name for f in fields(VcenterOptions)]


def with_vcenter_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a typer command the vCenter options; it receives them as one `vcenter_options: VcenterOptions`.

    Typer has no option groups, so the group is spliced into the command's signature here, once, instead of
    six parameters declared again on every command that talks to vCenter.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "vcenter_options"]
    hints = typing.get_type_hints(VcenterOptions, include_extras=True)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=hints[name])
        for name in _OPTION_FIELDS
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        options = VcenterOptions(**{name: kwargs.pop(name) for name in _OPTION_FIELDS})
        command(**kwargs, vcenter_options=options)

    wrapper.__signature__ = signature.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *extra]} | {"return": None}
    return wrapper


def open_vsphere(experiment: Experiment | None, options: VcenterOptions) -> Vsphere | None:
    """The vSphere session when a vCenter is configured; an error when the spec needs one and none is."""
    from controller.metrics import VSPHERE_ONLY
    from controller.vsphere.config import load_config

    config = load_config(
        options.vcenter,
        options.vcenter_config,
        user=options.vcenter_user,
        password=options.vcenter_password,
        ca_bundle=options.vcenter_ca_bundle,
        insecure=options.vcenter_insecure,
    )
    if config is None:
        if experiment is not None and experiment.deploy is not None:
            raise InputError("deploy: cloning the run's agent VMs needs --vcenter (or VTAX_VCENTER_URL)")
        actions = experiment.vsphere_actions() if experiment is not None else []
        if actions:
            condition, stage, action = actions[0]
            raise InputError(f"condition {condition.name!r} {stage}: {action} needs --vcenter (or VTAX_VCENTER_URL)")
        needs = sorted(set(experiment.sla) & VSPHERE_ONLY) if experiment is not None else []
        if needs:
            raise InputError(f"sla.{needs[0]}: only vCenter reports it; run with --vcenter (or VTAX_VCENTER_URL)")
        return None
    from controller.vsphere.connection import Vcenter
    from controller.vsphere.session import Vsphere

    if options.vcenter_insecure or config.insecure:
        errors.print(f"vtax: warning: not verifying the TLS certificate of {config.url}")
    return Vsphere(vcenter=Vcenter(config=config), spec=experiment.vsphere if experiment else VsphereSpec())


@dataclass(frozen=True, kw_only=True)
class RunWiring:
    """What the vSphere wing hands a run: a host-counter source, the `vsphere:` hook actions, the placement."""

    sources: list[HostCounterSource]
    actions: dict[str, ActionHandler]
    place: Placer


def wiring(vsphere: Vsphere, experiment: Experiment, store: Store) -> RunWiring:
    """The parts of a --vcenter run: vCenter's counters stored in `store`, the actions, the agents' VMs."""
    from controller.vsphere.actions import run_action
    from controller.vsphere.session import placer
    from controller.vsphere.source import VsphereHostSource

    source = VsphereHostSource(vsphere=vsphere, store=store, cooldown_s=experiment.timing.cooldown)
    return RunWiring(
        sources=[source],
        actions={"vsphere": functools.partial(run_action, vsphere)},
        place=placer(vsphere, experiment),
    )


def _required(experiment: Experiment | None, options: VcenterOptions) -> Vsphere:
    vsphere = open_vsphere(experiment, options)
    if vsphere is None:
        raise InputError(NO_VCENTER)
    return vsphere


def collect(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix of it")],
    store: StoreOption = DEFAULT_PATH,
    *,
    vcenter_options: VcenterOptions,
) -> None:
    """Read vCenter's counters for the trials of a --vcenter run that have none (vCenter was unreachable at the
    time), then print the summary again. Within about an hour realtime data is read; later, 300 s samples."""
    from controller.analysis import analyse
    from controller.report import print_result
    from controller.vsphere.source import collect_missing

    opened = Store(store, create=False)
    run = opened.run(run_id)
    experiment = Experiment.model_validate(run["spec"])
    vsphere = _required(experiment, vcenter_options)
    with vsphere.vcenter:
        filled = collect_missing(vsphere=vsphere, store=opened, run_id=run["id"], seconds=experiment.timing.duration)
    console.print(f"vCenter counters read for {len(filled)} trial(s): {', '.join(map(str, filled)) or 'none missing'}")
    print_result(console, analyse(opened, run["id"]))


def inventory(
    spec: Annotated[
        Path | None, typer.Argument(help="experiment spec whose agents to map (default: --broker's)")
    ] = None,
    broker: BrokerOption = None,
    broker_certs: BrokerCertsOption = None,
    as_json: AsJsonOption = False,
    *,
    vcenter_options: VcenterOptions,
) -> None:
    """Show where each agent lives in vSphere: its VM (and how it was found), host, cluster, zone, and the
    appliance VMs on those hosts. Exit 2 when an agent has no VM."""
    from controller.distributed import registered_agents
    from controller.vsphere.session import guest_agents

    experiment = load(spec) if spec is not None else None
    vsphere = _required(experiment, vcenter_options)
    config = broker_settings(broker, broker_certs)
    with vsphere.vcenter:
        registered = {a["name"]: a for a in registered_agents(config)} if config else {}
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
            _print_inventory(vsphere, placed, rows)
        if missing:
            raise InputError(missing)


def _print_inventory(vsphere: Vsphere, placed: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    console.print(f"{placed['server']}: {len(vsphere.inventory.hosts)} hosts, {len(vsphere.inventory.vms)} VMs")
    columns = ("agent", "vm", "found_by", "host", "cluster", "zone", "power")
    table = Table(*(c.replace("_", " ") for c in columns))
    for row in rows:
        table.add_row(*(str(row[c] or "") for c in columns))
    console.print(table)
    appliances = Table("appliance VM", "host", "power")
    for row in placed["appliances"]:
        appliances.add_row(row["vm"], row["host"] or "", row["power"])
    console.print(appliances if placed["appliances"] else "no appliance VMs on these hosts (vsphere.appliances)")


def deploy(
    ctx: typer.Context,
    template: Annotated[str | None, typer.Option("--template", help="VM or template to clone the agents from")] = None,
    count: Annotated[int, typer.Option("--count", min=1, max=10_000, help="agent VMs to make")] = 1,
    hosts: Annotated[
        str | None, typer.Option("--hosts", help="shell-style pattern of the hosts to spread them over")
    ] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", help="spread them over this cluster's hosts")] = None,
    zone: Annotated[str, typer.Option("--zone", help="their security zone (in their names and settings)")] = "lab",
    network: Annotated[str | None, typer.Option("--network", help="port group to connect their NICs to")] = None,
    datastore: Annotated[str | None, typer.Option("--datastore", help="datastore for their disks")] = None,
    linked_clone: Annotated[
        bool, typer.Option("--linked-clone", help="linked clones from the template's current snapshot")
    ] = False,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="network their agents may send load to (repeatable)")
    ] = None,
    influx: Annotated[str | None, typer.Option("--influx", help="InfluxDB URL their agents stream to")] = None,
    cloud_init: Annotated[
        bool,
        typer.Option(
            "--cloud-init", help="give the settings as cloud-init user data (templates configured by cloud-init)"
        ),
    ] = False,
    deployment: Annotated[
        str, typer.Option("--deployment", help="this fleet's name: the value of its VMs' vtax.deployment attribute")
    ] = "vtax",
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=64, help="clones at once")] = 8,
    wait: Annotated[
        float, typer.Option("--wait", min=0, help="seconds to wait for every agent to register (0: do not wait)")
    ] = 600.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, make nothing")] = False,
    broker: BrokerOption = None,
    broker_certs: BrokerCertsOption = None,
    *,
    vcenter_options: VcenterOptions,
) -> None:
    """Clone agent VMs from a template, spread evenly over hosts, each given its agent settings through
    guestinfo (name, zone, broker, allowlist), marked as this deployment's and powered on; then wait until
    every agent has registered. Exit 3 when some VM did not come up (the others stay)."""
    if ctx.invoked_subcommand is not None:
        return
    from controller.vsphere.deploy import Deployer, choose_hosts, plan, settings

    if template is None:
        raise InputError("deploy: --template is required (the VM or template to clone the agents from)")
    config = broker_settings(broker, broker_certs)
    if config is None:
        raise InputError("deploy: --broker is required: the agents register there (or VTAX_BROKER)")
    vsphere = _required(None, vcenter_options)
    with vsphere.vcenter:
        deployer = Deployer(vsphere.vcenter, deployment)
        chosen = [h.name for h in choose_hosts(deployer.inventory, pattern=hosts, cluster=cluster)]
        clones = plan(chosen, count, zone, taken={vm.name for vm in deployer.inventory.vms.values()})
        table = Table("VM", "host")
        for clone in clones:
            table.add_row(clone.name, clone.host)
        console.print(table)
        console.print(f"{len(clones)} clone(s) of {template} over {len(chosen)} host(s), deployment {deployment!r}")
        if dry_run:
            return
        up = _make(
            deployer,
            clones,
            template=template,
            guestinfo=lambda c: settings(
                c, zone=zone, broker=config.url, allow=allow or [], influx=influx, cloud_init=cloud_init
            ),
            network=network,
            datastore=datastore,
            linked=linked_clone,
            parallel=parallel,
        )
        if not wait:
            console.print(
                f"{len(up)} of {len(clones)} agent VM(s) made and powered on (--wait 0: not waiting for agents)"
            )
        missing = _await_agents(config, deployer, up, wait) if wait and up else []
        if wait:
            console.print(f"{len(up) - len(missing)} of {len(clones)} agent VM(s) up and registered")
    _all_up(len(clones), up, missing)


def _make(deployer: Deployer, clones: list[Clone], **create: Any) -> list[str]:
    """`deployer.create(clones, **create)` under a progress bar, each failure printed in a line; the names of the
    VMs made and powered on."""
    made: list[Created] = _with_progress(
        "cloning", len(clones), lambda step: deployer.create(clones, on_done=lambda _: step(1), **create)
    )
    for created in made:
        if not created["ok"]:
            errors.print(
                f"vtax: {created['vm']} on {created['host']}: not made: {created['reason']}",
                soft_wrap=True,
                markup=False,
            )
    return [c["vm"] for c in made if c["ok"]]


def _all_up(planned: int, up: list[str], missing: list[str], then: str = "") -> None:
    """InfrastructureError (exit 3) unless every planned VM was made and its agent registered."""
    failed = planned - len(up) + len(missing)
    if failed:
        raise InfrastructureError(f"deploy: {failed} of {planned} agent VM(s) did not come up{then}")


@contextlib.contextmanager
def run_deployment(
    vsphere: Vsphere, experiment: Experiment, broker: BrokerConfig | None, *, source: str, keep: bool
) -> Iterator[Experiment]:
    """The agent VMs of the spec's `deploy` block. Planned and checked against the spec before anything is made,
    cloned and waited for; the run gets the experiment with their agents. Removed when the run ends, however it
    ends (an error, Ctrl-C), unless `keep`."""
    from controller.vsphere.deploy import Deployer, plan_groups, settings

    spec = experiment.deploy
    assert spec is not None
    if broker is None:
        raise InputError(f"{source}: deploy: its agents register with a broker: give --broker (or VTAX_BROKER)")
    name = spec.name or f"{experiment.name}-{secrets.token_hex(3)}"
    deployer = Deployer(vsphere.vcenter, name)
    planned = plan_groups(deployer.inventory, spec.groups, source)
    group_of = {clone.name: spec.groups[index] for index, clone in planned}
    agents = [
        AgentSpec(
            name=clone.name,
            zone=spec.groups[index].zone,
            vm=clone.name,
            labels={**spec.groups[index].labels, "deployment": name, "host": clone.host, "group": str(index)},
        )
        for index, clone in planned
    ]
    expanded = with_agents(experiment, agents, source)  # a workload naming an agent the plan has not: exit 2 now
    clones = [clone for _, clone in planned]
    hosts = len({clone.host for clone in clones})
    console.print(f"deployment {name!r}: {len(clones)} agent VM(s) of {spec.template} over {hosts} host(s)")
    try:
        up = _make(
            deployer,
            clones,
            template=spec.template,
            guestinfo=lambda c: settings(
                c,
                zone=group_of[c.name].zone,
                broker=spec.broker or broker.url,
                allow=spec.allow,
                influx=spec.influx,
                cloud_init=spec.cloud_init,
            ),
            network=spec.network,
            datastore=spec.datastore,
            linked=spec.linked_clone,
            parallel=spec.parallel,
        )
        missing = _await_agents(broker, deployer, up, spec.wait) if up else []
        _all_up(len(clones), up, missing, "; no trial ran")
        console.print(f"deployment {name!r}: {len(up)} agent(s) registered")
        vsphere.reread()
        yield expanded
    finally:
        if keep:
            console.print(f"kept deployment {name!r}; remove it with: vtax deploy destroy --deployment {name}")
        else:
            _remove(deployer)


def _remove(deployer: Deployer) -> None:
    """A run's deployment removed; a failure is told with the command that finishes the job, and does not hide
    the run's own outcome."""
    from controller.vsphere.connection import describe_fault

    again = f"vtax deploy destroy --deployment {deployer.deployment}"
    try:
        removed = deployer.destroy()
    except KeyboardInterrupt:
        errors.print(f"vtax: removing the deployment was interrupted; finish it with: {again}")
        raise
    except Exception as exc:  # vCenter gone or refusing: the VMs stay, and the user must know it
        errors.print(f"vtax: could not remove the deployment ({describe_fault(exc)}); finish it with: {again}")
        return
    console.print(f"deployment {deployer.deployment!r}: removed {len(removed)} agent VM(s)")


def _with_progress(what: str, total: int, work: Callable[[Callable[[int], None]], Any]) -> Any:
    """`work(advance)` under a progress bar of `total` steps; `advance(n)` counts n done."""
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(what, total=total)
        return work(lambda n=1: progress.advance(task, n))


def _await_agents(config: BrokerConfig, deployer: Deployer, names: list[str], timeout: float) -> list[str]:
    """The names whose agent has not registered within `timeout` seconds, each printed with what vCenter shows
    of its VM."""
    from controller.distributed import registered_agents

    wanted = set(names)
    give_up = time.monotonic() + timeout

    def wait(advance: Callable[[int], None]) -> set[str]:
        seen: set[str] = set()
        while seen != wanted and time.monotonic() < give_up:
            now = {a["name"] for a in registered_agents(config)} & wanted
            advance(len(now - seen))
            seen |= now
            if seen != wanted:
                time.sleep(1.0)
        return seen

    missing = sorted(wanted - _with_progress("agents registered", len(wanted), wait))
    for name, why in (deployer.why_silent(missing) if missing else {}).items():
        errors.print(
            f"vtax: {name}: its agent did not register within {timeout:g} s: {why}", soft_wrap=True, markup=False
        )
    return missing


def deploy_destroy(
    deployment: Annotated[str, typer.Option("--deployment", help="the fleet to remove")] = "vtax",
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=64, help="deletions at once")] = 8,
    *,
    vcenter_options: VcenterOptions,
) -> None:
    """Power off and delete exactly the VMs this deployment made: those whose vtax.deployment attribute names
    it (never by name alone)."""
    from controller.vsphere.deploy import Deployer

    vsphere = _required(None, vcenter_options)
    with vsphere.vcenter:
        deployer = Deployer(vsphere.vcenter, deployment)
        count = len(deployer.mine())
        removed = _with_progress("removing", count, lambda step: deployer.destroy(parallel, on_done=lambda _: step(1)))
    console.print(
        f"removed {len(removed)} VM(s) of deployment {deployment!r}" + (f": {', '.join(removed)}" if removed else "")
    )


def deploy_status(
    deployment: Annotated[str, typer.Option("--deployment", help="the fleet to list")] = "vtax",
    broker: BrokerOption = None,
    broker_certs: BrokerCertsOption = None,
    as_json: AsJsonOption = False,
    *,
    vcenter_options: VcenterOptions,
) -> None:
    """The VMs of a deployment: host, power, and (with --broker) their agent's heartbeat."""
    from controller.distributed import registered_agents
    from controller.vsphere.deploy import Deployer

    config = broker_settings(broker, broker_certs)
    beats = {a["name"]: a for a in registered_agents(config)} if config else {}
    vsphere = _required(None, vcenter_options)
    with vsphere.vcenter:
        deployer = Deployer(vsphere.vcenter, deployment)
        hosts = deployer.inventory.hosts
        rows = [
            {
                "vm": vm.name,
                "host": hosts[vm.host].name if vm.host in hosts else None,
                "power": vm.power,
                "agent": vm.name in beats,
                "heartbeat_age_s": round(time.time() - beats[vm.name]["heartbeat"], 1) if vm.name in beats else None,
            }
            for vm in sorted(deployer.mine(), key=lambda v: v.name)
        ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("VM", "host", "power", "agent")
    for row in rows:
        agent = f"{row['heartbeat_age_s']:.0f} s ago" if row["agent"] else ("not registered" if config else "")
        table.add_row(row["vm"], row["host"] or "", row["power"], agent)
    console.print(table if rows else f"no VM of deployment {deployment!r}")


def register(app: typer.Typer) -> None:
    """Add the wing's commands to the `vtax` app."""
    app.command("collect")(with_vcenter_options(collect))
    app.command("inventory")(with_vcenter_options(inventory))
    fleet = typer.Typer(help="Agent VMs cloned from a template, and removed again.")
    fleet.callback(invoke_without_command=True)(with_vcenter_options(deploy))
    fleet.command("destroy")(with_vcenter_options(deploy_destroy))
    fleet.command("status")(with_vcenter_options(deploy_status))
    app.add_typer(fleet, name="deploy")
