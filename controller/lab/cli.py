"""`vtax lab`: the lab's command line (root): guest namespaces, the appliance between them, its settings."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from controller.errors import InputError
from controller.lab import netns
from controller.options import console

lab_app = typer.Typer(help="A lab of network namespaces as guest VMs, with an appliance between them (root).")


@lab_app.command("up")
def lab_up(
    guests: Annotated[int, typer.Option("--guests", help="guest namespaces; odd ones in zone a, even in zone b")] = 2,
    appliance: Annotated[bool, typer.Option("--appliance", help="start with the appliance on (conntrack)")] = False,
    agents: Annotated[bool, typer.Option("--agents", help="also start a redis-server and one agent per guest")] = False,
    broker_port: Annotated[int, typer.Option("--broker-port", help="redis-server port with --agents")] = 6390,
) -> None:
    """Create guest namespaces on 198.18.0.0/15 and the appliance namespace that routes between them."""
    state = netns.up(guests=guests, appliance=appliance, agents=agents, broker_port=broker_port)
    table = Table("guest", "namespace", "zone", "address", "management")
    for i in range(1, guests + 1):
        g = netns.Guest(index=i)
        table.add_row(g.name, g.netns, g.zone, g.address, g.mgmt_address)
    console.print(table)
    console.print(f"appliance namespace {netns.APPLIANCE} routes 198.18.1.0/24 ↔ 198.18.2.0/24")
    if agents:
        console.print(
            f"started redis-server (TLS, an ACL user per side, signed tasks) and {guests} agents; broker "
            f"{state['broker']}; logs in {netns.STATE_DIR}. The controller's settings, then a look at the agents:"
        )
        console.print(f"  set -a; . {state['controller_env']}; set +a")
        console.print("  vtax agents")


@lab_app.command("down")
def lab_down() -> None:
    """Remove every namespace, link and process the lab made (also after a crash); idempotent."""
    removed = netns.down()
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
        applied = netns.configure_appliance(rules=None, delay_ms=None, rate_mbit=None)
    else:
        applied = netns.configure_appliance(
            rules=0 if rules is None else rules, delay_ms=delay, rate_mbit=rate, cpu=cpu
        )
    console.print("appliance: " + (", ".join(applied) if applied else "off (plain routing)"))


@lab_app.command("status")
def lab_status() -> None:
    """What the lab is now."""
    print(json.dumps(netns.status(), indent=2))
