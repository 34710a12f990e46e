"""Shared helpers: run the real `vtax` command and write specs into a temporary directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

VTAX = str(Path(sys.executable).parent / "vtax")


def pytest_configure(config: pytest.Config) -> None:
    if shutil.which("iperf3") is None:
        raise pytest.UsageError("the tests need the iperf3 program: apt-get install iperf3 (or run `make test`)")


class Vtax:
    """Runs `vtax` as a user would, with a run store and specs in one temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.store = workdir / "runs.db"

    def spec(self, text: str, name: str = "spec.yaml") -> Path:
        path = self.workdir / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def __call__(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VTAX, *args],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={"VTAX_STORE": str(self.store), "PATH": "/usr/local/bin:/usr/bin:/bin", "COLUMNS": "160"},
        )

    def run_json(self, spec: Path, *extra: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess[str], Any]:
        out = self.workdir / "result.json"
        done = self(*("run", str(spec), "--json", str(out), *extra), timeout=timeout)
        return done, json.loads(out.read_text()) if out.exists() else None


@pytest.fixture
def vtax(tmp_path: Path) -> Vtax:
    return Vtax(tmp_path)
