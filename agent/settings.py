"""Settings of an outside service (InfluxDB, vCenter): a YAML file, then VTAX_<PREFIX>_<FIELD> environment
variables, then command-line flags, validated by one pydantic model. InfluxDB's model lives here, apart from
the sink that writes, so that what only passes the settings on need not load the writer."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from agent.urls import check_broker, check_http, without_credentials

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
    """Where an agent keeps its load tasks until the controller has stored them (`agent.kept`):
    $XDG_STATE_HOME/vtax/kept/<its name>, the same after a restart, so a resumed run finds them."""
    return _state_home() / "vtax" / "kept" / agent


def load_config(url: str | None, config_file: Path | None) -> InfluxConfig | None:
    """From a YAML file, then VTAX_INFLUX_<FIELD> environment variables, then the URL flag; None without a URL."""
    return load_settings(
        InfluxConfig, env_prefix="VTAX_INFLUX_", config_file=config_file, flags={"url": url}, what="InfluxDB settings"
    )


# The files of one side's directory as `vtax certs init` writes them (controller/ or agent/): the CA that signed
# the broker's TLS certificate, this side's key and certificate (its TLS client certificate; the controller's also
# signs every task), and, on an agent, the controllers' certificates whose signatures it accepts.
CA_FILE, CERT_FILE, KEY_FILE, TRUSTED_DIR = "ca.crt", "vtax.crt", "vtax.key", "trusted"
PREFIX_PATTERN = r"^[A-Za-z0-9_.:-]{0,64}$"  # an installation's key prefix


class BrokerConfig(BaseModel):
    """How to reach the distributed engine's Redis and how tasks on it are signed.

    A password in the URL is taken out of it here, so the URL is safe to show; it is best given as
    VTAX_BROKER_PASSWORD (from a file only root reads), never on a command line, where `ps` shows it.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="redis://HOST:PORT/DB, or rediss:// for TLS")
    username: str | None = Field(None, description="Redis ACL user (default: Redis' `default` user)")
    password: SecretStr | None = Field(None, description="that user's password")
    certs: Path | None = Field(
        None,
        description="the directory `vtax certs init` made for this side (DIR/controller or DIR/agent): TLS trust, "
        "client certificate and task signing; without it, tasks travel unsigned",
    )
    prefix: str = Field(
        "",
        pattern=PREFIX_PATTERN,
        description="prefix of every Redis key and queue, so that several vtax installations share one Redis",
    )

    @field_validator("url")
    @classmethod
    def _redis(cls, value: str) -> str:
        return check_broker(value)

    @model_validator(mode="after")
    def _credentials_out_of_the_url(self) -> BrokerConfig:
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.username or parsed.password:
            self.username = self.username or urllib.parse.unquote(parsed.username or "") or None
            if self.password is None and parsed.password is not None:
                self.password = SecretStr(urllib.parse.unquote(parsed.password))
            self.url = without_credentials(self.url)
        return self

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://")

    def url_with_credentials(self) -> str:
        """The URL kombu connects with: the user and password put back. Never shown, logged or stored."""
        if self.username is None and self.password is None:
            return self.url
        parsed = urllib.parse.urlsplit(self.url)
        user = urllib.parse.quote(self.username or "", safe="")
        secret = urllib.parse.quote(self.password.get_secret_value(), safe="") if self.password else ""
        return urllib.parse.urlunsplit(parsed._replace(netloc=f"{user}:{secret}@{parsed.netloc}"))


def load_broker(url: str | None, config_file: Path | None = None, **flags: Any) -> BrokerConfig | None:
    """From a YAML file, then VTAX_BROKER_<FIELD> environment variables, then the flags; None without a URL."""
    return load_settings(
        BrokerConfig,
        env_prefix="VTAX_BROKER_",
        config_file=config_file,
        flags={"url": url, **flags},
        what="broker settings",
    )
