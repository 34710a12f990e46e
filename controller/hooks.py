"""Condition hooks: shell commands or vSphere actions that put the system under test into a condition and
take it out."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

from controller.errors import HookError
from controller.spec import Hook, VsphereAction
from controller.vactions import run_action
from controller.vsphere import Vsphere


def run_hooks(
    hooks: list[Hook],
    *,
    stage: str,
    condition: str,
    env: Mapping[str, str],
    timeout: float,
    vsphere: Vsphere | None = None,
) -> None:
    """Run each hook in order: commands with /bin/sh, actions through vCenter; the first failure raises HookError."""
    for command in hooks:
        if isinstance(command, VsphereAction):
            run_action(vsphere, command, stage=stage, condition=condition)
            continue
        try:
            done = subprocess.run(
                command,
                shell=True,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HookError(
                f"{stage} hook of condition {condition!r} timed out after {timeout:g} s: {command}"
            ) from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise HookError(f"{stage} hook of condition {condition!r} exited {done.returncode}: {command} ({tail[0]})")
