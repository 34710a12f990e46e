"""An agent's settings from the VM it runs in, so one template serves every clone without per-VM edits.

`vtax deploy` writes them into each clone's configuration in one of two ways, and the agent reads either:

- guestinfo keys `guestinfo.vtax.<key>`, read back through VMware Tools (`vmtoolsd --cmd "info-get ..."`);
- with `--cloud-init`, cloud-init user data whose `write_files` puts them into INSTANCE_FILE (YAML), for
  templates that are configured by cloud-init (its VMware datasource reads the user data from guestinfo too).

A flag or VTAX_* variable given to `vtax agent` wins over both, and guestinfo over the file. Outside a VMware VM
(no vmtoolsd) and without the file there are none, and nothing changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

KEYS = ("broker", "name", "zone", "allow", "address", "influx")
TIMEOUT_S = 3.0
INSTANCE_FILE = Path("/etc/vtax/instance.yaml")  # where the cloud-init user data of `vtax deploy` writes them


class InstanceFileError(ValueError):
    """The instance file exists but is not a mapping of the known keys to text."""


def instance_settings() -> dict[str, str]:
    """The vtax settings of this VM (key → value): guestinfo's, over the instance file's."""
    return cloud_init_file() | guestinfo()


def guestinfo() -> dict[str, str]:
    """The vtax settings this VM's guestinfo holds, or {} without VMware Tools."""
    program = shutil.which("vmtoolsd")
    if program is None:
        return {}
    found = {}
    for key in KEYS:
        try:
            done = subprocess.run(
                [program, "--cmd", f"info-get guestinfo.vtax.{key}"],
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        value = done.stdout.strip()
        if done.returncode == 0 and value:
            found[key] = value
    return found


def cloud_init_file() -> dict[str, str]:
    """The settings in the instance file (VTAX_INSTANCE_FILE, default INSTANCE_FILE), or {} when there is none;
    InstanceFileError naming the file and the key when it is not what `vtax deploy` writes."""
    path = Path(os.environ.get("VTAX_INSTANCE_FILE") or INSTANCE_FILE)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise InstanceFileError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InstanceFileError(f"{path}: not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InstanceFileError(f"{path}: expected a mapping of {', '.join(KEYS)}")
    for key, value in data.items():
        if key not in KEYS:
            raise InstanceFileError(f"{path}: {key}: unknown key; expected one of {', '.join(KEYS)}")
        if not isinstance(value, str):
            raise InstanceFileError(f"{path}: {key}: expected text, got {type(value).__name__}")
    return {key: value for key, value in data.items() if value}
