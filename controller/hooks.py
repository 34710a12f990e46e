"""Condition hooks: what puts the system under test into a condition and takes it out.

A hook is a shell command, or a built-in action that a wing carries out (`vsphere: power_on` …). The run
loop knows actions only through the handlers the composition root (the CLI) registers, keyed by the action's
kind, so the core never imports a wing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypedDict

from controller.errors import HookError
from controller.spec import Action, Hook

ActionHandler = Callable[..., None]  # (action, *, stage, condition); HookError on failure

# what a shell hook sees of the controller's environment unless the spec names more (`hook_env`): never the
# broker URL, the InfluxDB token or the vCenter password the controller holds
BASE_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM")


class HookRun(TypedDict):
    """One shell hook as it ran: what it printed is kept (the store), not thrown away."""

    stage: str
    command: str
    exit_code: int | None  # None: it timed out
    output: str  # stdout, then stderr
    seconds: float


HookListener = Callable[[HookRun], None]


def run_hooks(
    hooks: list[Hook],
    *,
    stage: str,
    condition: str,
    env: Mapping[str, str],
    timeout: float,
    actions: Mapping[str, ActionHandler],
    on_run: HookListener | None = None,
    passed: Sequence[str] = (),
) -> None:
    """Run each hook in order; the first failure raises HookError. Every shell hook's output reaches `on_run`,
    a failed one's too, before the error. A shell hook's environment is BASE_ENVIRONMENT, the variables named
    in `passed`, and `env` (the run's VTAX_* variables)."""
    names = (*BASE_ENVIRONMENT, *passed)
    environment = {name: os.environ[name] for name in names if name in os.environ} | dict(env)
    environment["PATH"] = _with_own_bin(environment.get("PATH", os.defpath))
    for hook in hooks:
        if isinstance(hook, Action):
            handler = actions.get(hook.kind)
            if handler is None:
                raise HookError(f"{stage} hook of condition {condition!r}: {hook} needs --{hook.kind_option}")
            handler(hook, stage=stage, condition=condition)
        else:
            _shell(hook, stage=stage, condition=condition, env=environment, timeout=timeout, on_run=on_run)


def _with_own_bin(path: str) -> str:
    """PATH with this Python's bin directory first, so that `vtax` in a hook is the vtax running the hook (a
    venv's, even when the venv is not activated)."""
    own = os.path.dirname(sys.executable)
    return os.pathsep.join([own, *(entry for entry in path.split(os.pathsep) if entry != own)])


def _shell(
    command: str, *, stage: str, condition: str, env: Mapping[str, str], timeout: float, on_run: HookListener | None
) -> None:
    began = time.monotonic()
    try:
        done = subprocess.run(
            command,
            shell=True,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        if on_run is not None:
            output = _text(exc.stdout) + _text(exc.stderr)
            on_run({"stage": stage, "command": command, "exit_code": None, "output": output, "seconds": timeout})
        raise HookError(f"{stage} hook of condition {condition!r} timed out after {timeout:g} s: {command}") from None
    if on_run is not None:
        on_run(
            {
                "stage": stage,
                "command": command,
                "exit_code": done.returncode,
                "output": done.stdout + done.stderr,
                "seconds": time.monotonic() - began,
            }
        )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise HookError(f"{stage} hook of condition {condition!r} exited {done.returncode}: {command} ({tail[0]})")


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
