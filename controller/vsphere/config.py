"""Where vCenter is and how to log in: read without pyvmomi, so a run without --vcenter never imports it."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from agent.settings import load_settings
from controller.errors import InputError


class VcenterConfig(BaseModel):
    """Where vCenter is and how to log in. The password is a SecretStr: never printed, never logged."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="https://vcenter.example[:port][/sdk], or an ESXi host")
    user: str = Field(description="e.g. vtax@vsphere.local; read-only is enough unless hooks use vSphere actions")
    password: SecretStr
    ca_bundle: Path | None = Field(None, description="PEM file of the CA(s) that signed the server's certificate")
    insecure: bool = Field(False, description="skip TLS verification (a lab with self-signed certificates)")
    timeout: float = Field(60.0, gt=0, description="seconds a call may take")

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value if "://" in value else f"https://{value}")
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("expected https://HOST[:PORT][/sdk]")
        return parts.geturl()

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urllib.parse.urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


def load_config(
    url: str | None,
    config_file: Path | None,
    *,
    user: str | None = None,
    password: str | None = None,
    ca_bundle: Path | None = None,
    insecure: bool | None = None,
) -> VcenterConfig | None:
    """YAML file, then VTAX_VCENTER_<FIELD> environment variables, then flags; None when no URL is given."""
    try:
        return load_settings(
            VcenterConfig,
            env_prefix="VTAX_VCENTER_",
            config_file=config_file,
            flags={"url": url, "user": user, "password": password, "ca_bundle": ca_bundle, "insecure": insecure},
            what="vCenter settings",
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
