"""Condition hooks: shell commands that put the system under test into a condition and take it out."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

from controller.errors import InfrastructureError


class HookError(InfrastructureError):
    """A hook command failed or timed out."""


def run_hooks(commands: list[str], *, stage: str, condition: str, env: Mapping[str, str], timeout: float) -> None:
    """Run each command with /bin/sh; the first failure raises HookError with its output's tail."""
    for command in commands:
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
