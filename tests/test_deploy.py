"""The agent's systemd unit: systemd accepts it, and it keeps what the docs promise (a spool that survives a
restart, no root, no path of one particular install)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "vtax-agent.service"


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser["Service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # the unit names `vtax` for systemd's search path; here it resolves to this checkout's
    unit = tmp_path / UNIT.name
    vtax = Path(sys.executable).parent / "vtax"
    unit.write_text(UNIT.read_text().replace("ExecStart=vtax ", f"ExecStart={vtax} "), encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # unknown keys are only warned of: none allowed


def test_the_spool_and_the_kept_tasks_survive_a_restart_and_the_agent_is_not_root() -> None:
    service = _service()
    assert service["StateDirectory"] == "vtax"
    # not in PrivateTmp, wiped at stop: the InfluxDB spool, and the load tasks kept for a resumed soak
    assert service["Environment"].split() == ["XDG_STATE_HOME=%S", "VTAX_INFLUX_SPOOL_DIR=%S/vtax/spool"]
    assert service["User"] not in ("", "root")
    assert service["ExecStart"].split()[0] == "vtax"  # no venv path of one install
