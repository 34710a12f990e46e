"""What a user installs: the wheel carries the license, the dashboards, the agent's unit and the examples, and
its version comes from git, so every commit has its own; `vtax files` writes the shipped files out."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Vtax

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_carries_the_shipped_files_and_a_version_from_git(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("vtax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(".dist-info/" in n and n.endswith("/LICENSE") for n in names)
    for shipped in (
        "vtax_deploy/vtax-agent.service",
        "vtax_deploy/agent.env.example",
        "vtax_deploy/grafana/dashboards/vtax-live.json",
        "vtax_deploy/grafana/provisioning/datasources/vtax.yaml",
        "vtax_examples/loopback.yaml",
    ):
        assert shipped in names, shipped
    head = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    version = wheel.name.split("-")[1]
    assert version != "0.1.0" and f"g{head.stdout.strip()}" in version, version


def test_files_writes_the_shipped_files_and_keeps_what_exists(vtax: Vtax) -> None:
    done = vtax("files", "out")
    assert done.returncode == 0, done.stderr
    out = vtax.workdir / "out"
    assert (out / "deploy" / "vtax-agent.service").read_text() == (ROOT / "deploy" / "vtax-agent.service").read_text()
    assert (out / "deploy" / "grafana" / "dashboards" / "vtax-live.json").exists()
    assert (out / "examples" / "vendors.yaml").exists()
    again = vtax("files", "out")
    assert again.returncode == 2 and "exists; give --force" in again.stderr
    assert vtax("files", "out", "--force").returncode == 0
