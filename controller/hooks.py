"""Condition hooks: what puts the system under test into a condition and takes it out.

A hook is a shell command, or a built-in action that a wing carries out (`vsphere: power_on` …). The run
loop knows actions only through the handlers the composition root (the CLI) registers, keyed by the action's
kind, so the core never imports a wing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping

from controller.errors import HookError
from controller.spec import Action, Hook

ActionHandler = Callable[..., None]  # (action, *, stage, condition); HookError on failure


def run_hooks(
    hooks: list[Hook],
    *,
    stage: str,
    condition: str,
    env: Mapping[str, str],
    timeout: float,
    actions: Mapping[str, ActionHandler],
) -> None:
    """Run each hook in order; the first failure raises HookError."""
    for hook in hooks:
        if isinstance(hook, Action):
            handler = actions.get(hook.kind)
            if handler is None:
                raise HookError(f"{stage} hook of condition {condition!r}: {hook} needs --{hook.kind_option}")
            handler(hook, stage=stage, condition=condition)
        else:
            _shell(hook, stage=stage, condition=condition, env=env, timeout=timeout)


def _shell(command: str, *, stage: str, condition: str, env: Mapping[str, str], timeout: float) -> None:
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
        raise HookError(f"{stage} hook of condition {condition!r} timed out after {timeout:g} s: {command}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise HookError(f"{stage} hook of condition {condition!r} exited {done.returncode}: {command} ({tail[0]})")
