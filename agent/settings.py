"""Settings of an outside service (InfluxDB, vCenter): a YAML file, then VTAX_<PREFIX>_<FIELD> environment
variables, then command-line flags, validated by one pydantic model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Settings = TypeVar("Settings", bound=BaseModel)


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
        raise ValueError(f"{config_file or what}: {field}: {error['msg']}") from None
