"""Settings of an outside service (InfluxDB, vCenter): a YAML file, then VTAX_<PREFIX>_<FIELD> environment
variables, then command-line flags, validated by one pydantic model. InfluxDB's model lives here, apart from
the sink that writes, so that what only passes the settings on need not load the writer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from agent.urls import check_http

Settings = TypeVar("Settings", bound=BaseModel)


DEFAULT_TASK_SLOTS = 64  # load tasks one agent process runs at once unless `--concurrency` says otherwise


def load_settings(
    model: type[Settings], *, env_prefix: str, config_file: Path | None, flags: dict[str, Any], what: str
) -> Settings | None:
    """The merged settings, or None when no `url` was given anywhere.

    ValueError names the source (the file, or `what`) and the field.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{config_file}: cannot read: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file}: expected a mapping of settings")
        data.update(loaded)
    for field in model.model_fields:
        value = os.environ.get(f"{env_prefix}{field.upper()}")
        if value is not None:
            data[field] = value
    data.update({key: value for key, value in flags.items() if value is not None})
    if not data.get("url"):
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise ValueError(f"{config_file or what}: {field}: {error['msg'].removeprefix('Value error, ')}") from None


class InfluxConfig(BaseModel):
    """Where and how to write. Secrets are SecretStr: never printed, never logged."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="e.g. http://influx.example:8086")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return check_http(value)

    kind: Literal["auto", "v2", "v1"] = Field("auto", description="auto: from /ping's version header")
    token: SecretStr | None = Field(None, description="v2 token")
    org: str = Field("vtax", description="v2 organisation")
    bucket: str = Field("vtax", description="v2 bucket")
    username: str | None = Field(None, description="v1 user")
    password: SecretStr | None = Field(None, description="v1 password")
    database: str = Field("vtax", description="v1 database")
    retention_policy: str | None = Field(None, description="v1 retention policy (default: the database's)")
    verify_tls: bool = True
    spool_dir: Path = Field(
        default_factory=lambda: _state_home() / "vtax" / "spool",
        description="where undeliverable points wait: a directory only the agent's user may enter "
        "(default $XDG_STATE_HOME/vtax/spool, i.e. ~/.local/state/vtax/spool)",
    )
    spool_max_mb: float = Field(512.0, gt=0, description="spool bound; beyond it new points are dropped and counted")


def _state_home() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")


def kept_dir(agent: str) -> Path:
    """Where an agent process keeps its load tasks until the controller has stored them (`agent.kept`):
    $XDG_STATE_HOME/vtax/kept/<its first name>, the same after a restart, so a resumed run finds them."""
    return _state_home() / "vtax" / "kept" / agent


def load_config(url: str | None, config_file: Path | None) -> InfluxConfig | None:
    """From a YAML file, then VTAX_INFLUX_<FIELD> environment variables, then the URL flag; None without a URL."""
    return load_settings(
        InfluxConfig, env_prefix="VTAX_INFLUX_", config_file=config_file, flags={"url": url}, what="InfluxDB settings"
    )
