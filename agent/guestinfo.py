"""An agent's settings from its VM's guestinfo, so one template serves every clone without per-VM edits.

`vtax deploy` writes `guestinfo.vtax.<key>` into each clone's configuration; VMware Tools in the guest reads it
back (`vmtoolsd --cmd "info-get guestinfo.vtax.<key>"`). A flag or VTAX_* variable given to `vtax agent` wins
over guestinfo; outside a VMware VM (no vmtoolsd) there is none, and nothing changes.
"""

from __future__ import annotations

import shutil
import subprocess

KEYS = ("broker", "name", "zone", "allow", "address", "influx")
TIMEOUT_S = 3.0


def guestinfo() -> dict[str, str]:
    """The vtax settings this VM's guestinfo holds (key → value), or {} without VMware Tools."""
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
