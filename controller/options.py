"""What every part of the command line shares: the consoles, the common options, and the run-result printing
helpers, so that the wings' commands (vSphere, the lab) look and behave like the core's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from agent.settings import BrokerConfig, InfluxConfig, load_broker, load_config
from agent.urls import check_broker
from controller.errors import InputError

console = Console()
if not console.is_terminal:
    console = Console(width=140)  # logs and CI: do not squeeze the table into 80 columns
errors = Console(stderr=True)

StoreOption = Annotated[str, typer.Option("--store", envvar="VTAX_STORE", help="SQLite run store")]
BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        envvar="VTAX_BROKER",
        help="Redis URL of the distributed engine, redis://HOST:PORT/DB or rediss:// (TLS); the user and password "
        "best as VTAX_BROKER_USERNAME / VTAX_BROKER_PASSWORD, out of `ps`",
    ),
]
BrokerCertsOption = Annotated[
    Path | None,
    typer.Option(
        "--broker-certs",
        envvar="VTAX_BROKER_CERTS",
        help="this side's directory from `vtax certs init` (DIR/controller, DIR/agent): TLS trust and task signing",
    ),
]
InfluxOption = Annotated[
    str | None,
    typer.Option("--influx", help="InfluxDB URL to stream to (or VTAX_INFLUX_URL; settings: docs/how-to/influxdb.md)"),
]
InfluxConfigOption = Annotated[
    Path | None,
    typer.Option("--influx-config", envvar="VTAX_INFLUX_CONFIG", help="YAML file of InfluxDB settings"),
]
MixedVersionsOption = Annotated[
    bool,
    typer.Option(
        "--allow-mixed-versions",
        help="run with agents whose vtax version differs from the controller's (they may measure differently)",
    ),
]
JsonOption = Annotated[Path | None, typer.Option("--json", help="write the run's result object to this file")]
AsJsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="print every hook's command and output (they are always stored)")
]


def check_writable(path: Path | None, option: str = "--json") -> None:
    if path is not None and not path.absolute().parent.is_dir():
        raise InputError(f"{path}: {option}: directory {path.absolute().parent} does not exist")


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"result written to {path}")


def influx_settings(url: str | None, config_file: Path | None) -> InfluxConfig | None:
    """InfluxDB settings from the flags, VTAX_INFLUX_* and the YAML file; None when no URL is given anywhere."""
    try:
        return load_config(url, config_file)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def broker_settings(url: str | None, certs: Path | None) -> BrokerConfig | None:
    """The broker's settings from the flags and VTAX_BROKER_*; None without --broker (the embedded engine)."""
    if url is None:
        return None
    try:
        check_broker(url)
        return load_broker(url, certs=certs)
    except ValueError as exc:
        raise InputError(str(exc)) from None
