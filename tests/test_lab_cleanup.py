"""`vtax lab down` removes what a crashed lab left behind, and is idempotent (root only)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.conftest import Vtax

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root for network namespaces")


def _netns() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()


def test_down_cleans_up_after_a_crash_and_twice(vtax: Vtax) -> None:
    vtax("lab", "down")
    # what an interrupted `lab up` leaves: a namespace, a root-side link, a process inside the namespace
    subprocess.run(["ip", "netns", "add", "vtax-g99"], check=True)
    subprocess.run(["ip", "link", "add", "vtxm99b", "type", "veth", "peer", "name", "vtxm99c"], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", "vtax-g99", "sleep", "300"])
    done = vtax("lab", "down")
    assert done.returncode == 0, done.stderr
    assert "namespace vtax-g99" in done.stdout and "link vtxm99b" in done.stdout
    assert "vtax-g99" not in _netns()
    assert sleeper.wait(timeout=10) is not None
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert "vtx" not in links
    second = vtax("lab", "down")
    assert second.returncode == 0 and "nothing to remove" in second.stdout


def test_down_stops_every_process_at_once(vtax: Vtax) -> None:
    """A lab with a broker and two agents: every process is signalled first, then all are waited for once (one
    at a time, 3 s each at worst, this took 8.7 s)."""
    up = vtax("lab", "up", "--guests", "2", "--agents", "--broker-port", "6391")
    try:
        assert up.returncode == 0, up.stderr
    finally:
        began = time.monotonic()
        done = vtax("lab", "down")
        took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("process ") == 3  # the broker and two agents
    assert took < 5.0, f"lab down took {took:.1f} s"
    assert not [ns for ns in _netns() if ns.startswith("vtax-")]
