"""Errors that end a command, each carrying its exit code (docs/reference/exit-codes.md)."""

MAX_LINE = 300  # an error is one line a person reads, never an echo of a huge input


class VtaxError(Exception):
    """A failure the CLI reports as one line and an exit code, never as a traceback."""

    exit_code = 3


class InputError(VtaxError):
    """Bad input: spec, arguments or configuration (exit 2)."""

    exit_code = 2


class SpecError(InputError):
    """A spec problem, located by file and field."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        self.source, self.field, self.reason = source, field, reason
        line = f"{source}: {field}: {reason}" if field else f"{source}: {reason}"
        line = " ".join(line.split())  # one line, whatever the input held
        super().__init__(line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…")


class InfrastructureError(VtaxError):
    """Something vtax depends on failed: a hook, an agent, a broker (exit 3)."""

    exit_code = 3


class HookError(InfrastructureError):
    """A condition hook (a shell command or a vSphere action) failed or timed out."""
