"""Bad service URLs are bad input (exit 2, one line, at once), passwords never show, and an InfluxDB that does
not answer is said at the start and costs the run no long wait at its end."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import time

import pytest

from agent.identity import version
from agent.urls import redact
from controller.spec import Experiment
from tests.conftest import VTAX, Vtax

NOOP = """\
name: inputs
agents: [{name: a}]
conditions: [{name: base, baseline: true}]
workloads: [{kind: noop, agents: [a]}]
timing: {warmup: 0, steady: 1.5, cooldown: 0, lead: 0.2}
repetitions: 2
"""
SECRET = "s3cret-pw"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:pw@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"),
        ("rediss://user:pw@host:6380", "rediss://user:***@host:6380"),
        ("redis://:a@h:1/0 and http://u:b@i:8086", "redis://:***@h:1/0 and http://u:***@i:8086"),
        ("http://influx.example:8086", "http://influx.example:8086"),  # nothing to hide
    ],
)
def test_redact_hides_every_password_in_a_text(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize("command", ["run", "agents", "agent"])
def test_a_broker_url_without_a_scheme_is_bad_input(vtax: Vtax, command: str) -> None:
    args = {"run": ["run", str(vtax.spec(NOOP))], "agents": ["agents"], "agent": ["agent", "--name", "a"]}[command]
    began = time.monotonic()
    done = vtax(*args, "--broker", "localhost:6379")
    assert time.monotonic() - began < 10
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("vtax: error: --broker: 'localhost:6379' is not a Redis URL; expected redis://")
    assert "Traceback" not in done.stderr
    if command == "run":
        assert not vtax.store.exists() or json.loads(vtax("runs", "--json").stdout) == []  # nothing was started


def test_an_influx_url_without_a_scheme_is_bad_input(vtax: Vtax) -> None:
    began = time.monotonic()
    done = vtax("run", str(vtax.spec(NOOP)), "--influx", "localhost:8086")
    assert time.monotonic() - began < 10
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "vtax: error: InfluxDB settings: url: 'localhost:8086' is not an http(s) URL; expected e.g. "
        "http://influx.example:8086"
    ]


def test_a_broker_password_shows_nowhere(vtax: Vtax) -> None:
    """Unreachable broker with a password: the error, `vtax agents` and the stored run all leave it out."""
    url = f"redis://:{SECRET}@127.0.0.1:{_free_port()}/0"
    done = vtax("run", str(vtax.spec(NOOP)), "--broker", url)
    assert done.returncode == 3, done.stderr
    assert SECRET not in done.stdout + done.stderr and "broker redis://127.0.0.1:" in done.stderr  # the URL without it
    listed = vtax("agents", "--broker", url)
    assert listed.returncode == 3 and SECRET not in listed.stdout + listed.stderr
    runs = vtax("runs", "--json")
    assert SECRET not in runs.stdout
    assert SECRET not in vtax.store.read_bytes().decode("utf-8", "replace")


def test_an_influxdb_that_does_not_answer_is_said_at_once_and_costs_no_long_wait(vtax: Vtax) -> None:
    url = f"http://vtax:{SECRET}@127.0.0.1:{_free_port()}"
    began = time.monotonic()
    done = vtax("run", str(vtax.spec(NOOP)), "--influx", url)
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    warning = done.stderr.splitlines()[0]
    assert warning.startswith("vtax: warning: InfluxDB at http://vtax:***@127.0.0.1:") and "does not answer" in warning
    assert "bytes of points wait in" in done.stderr  # kept in the spool, not lost, and said
    assert SECRET not in done.stdout + done.stderr
    assert took < 20  # the final flush gives a failing server seconds, not its whole 30 s


def test_version_short_help_and_a_bare_vtax(vtax: Vtax) -> None:
    version = vtax("--version")
    assert version.returncode == 0 and version.stdout.startswith("vtax ")
    short = vtax("run", "-h")
    assert short.returncode == 0 and "--broker" in short.stdout
    bare = vtax()
    assert bare.returncode == 0 and "Commands" in bare.stdout and "run" in bare.stdout


def test_reading_commands_never_create_a_store(vtax: Vtax) -> None:
    done = vtax("show", "nosuch")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"vtax: error: {vtax.store}: no run store here (give --store or VTAX_STORE)"
    ]
    assert vtax("runs").returncode == 0
    assert not vtax.store.exists()


def test_an_aborted_run_says_why_and_runs_can_be_removed(vtax: Vtax) -> None:
    hooked = NOOP.replace("{name: base, baseline: true}", "{name: base, baseline: true, setup: 'exit 7'}")
    failed = vtax("run", str(vtax.spec(hooked)))
    assert failed.returncode == 3, failed.stderr
    refused = vtax("run", str(vtax.spec(NOOP)), "--broker", f"redis://127.0.0.1:{_free_port()}/0")
    assert refused.returncode == 3
    ok = vtax("run", str(vtax.spec(NOOP)))
    assert ok.returncode == 0, ok.stderr
    assert "leaked semaphore" not in ok.stderr and "Warning" not in ok.stderr  # nothing a library left behind
    runs = {r["status"]: r for r in json.loads(vtax("runs", "--json").stdout)}
    assert set(runs) == {"aborted", "completed"} and len(json.loads(vtax("runs", "--json").stdout)) == 3

    hook_run = next(r for r in json.loads(vtax("runs", "--json").stdout) if "exit 7" in (r["reason"] or ""))
    shown = vtax("show", hook_run["id"])
    assert f"run {hook_run['id']} aborted: setup hook of condition 'base' exited 7" in shown.stdout
    assert "no trial was measured" in shown.stdout

    pruned = vtax("runs", "prune", "--aborted")
    assert pruned.returncode == 0 and "removed 2 aborted run(s)" in pruned.stdout
    [left] = json.loads(vtax("runs", "--json").stdout)
    assert left["status"] == "completed"
    removed = vtax("runs", "rm", left["id"][:12])
    assert removed.returncode == 0 and json.loads(vtax("runs", "--json").stdout) == []
    assert vtax("runs", "rm", "nosuch").returncode == 2


def test_a_result_file_alone_can_reproduce_its_run_and_be_lined_up_with_grafana(vtax: Vtax) -> None:
    spec = vtax.spec(NOOP)
    done, result = vtax.run_json(spec)
    assert result is not None, done.stderr
    assert result["format_version"] == 1
    assert result["vtax_version"] == version()
    assert Experiment.model_validate(result["spec"]).name == "inputs"  # the spec itself, runnable again
    controller = result["environment"]["controller"]
    assert controller["kernel"] == platform.release() and controller["cores"] >= 1 and controller["cpu_model"]
    assert controller["iperf3"] and controller["python"] == platform.python_version()
    for trial in result["trials"]:
        assert trial["start_at"] < trial["ended"] <= result["finished"]


def test_hook_output_is_kept_and_shown_with_verbose(vtax: Vtax) -> None:
    hooked = NOOP.replace(
        "{name: base, baseline: true}", "{name: base, baseline: true, setup: 'echo entering $VTAX_CONDITION'}"
    )
    spec = vtax.spec(hooked)
    quiet = vtax("run", str(spec))
    assert quiet.returncode == 0, quiet.stderr
    assert "entering base" not in quiet.stdout
    loud = vtax("run", str(spec), "--verbose")
    assert "trial 0 setup: echo entering $VTAX_CONDITION (exit 0" in loud.stdout
    assert "    entering base" in loud.stdout
    first = json.loads(vtax("runs", "--json").stdout)[-1]["id"]  # the quiet run kept its hook output too
    shown = vtax("show", first, "--verbose")
    assert shown.stdout.count("    entering base") == 2  # both trials' setup


def test_hooks_see_the_run_variables_and_what_the_spec_names_never_the_controllers_secrets(vtax: Vtax) -> None:
    hooked = (
        NOOP.replace("{name: base, baseline: true}", "{name: base, baseline: true, setup: 'env > hook-env.txt'}")
        + "hook_env: [KEEP_ME]\n"
    )
    spec = vtax.spec(hooked)
    secrets = {
        "VTAX_VCENTER_PASSWORD": "vc-secret",
        "VTAX_INFLUX_TOKEN": "influx-secret",
        "VTAX_LAB_TOKEN": "lab-secret",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "KEEP_ME": "kept",
    }
    done = subprocess.run(
        [VTAX, "run", str(spec)],
        cwd=vtax.workdir,
        capture_output=True,
        text=True,
        env={**vtax.env, **secrets},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = dict(line.split("=", 1) for line in (vtax.workdir / "hook-env.txt").read_text().splitlines() if "=" in line)
    assert seen["KEEP_ME"] == "kept" and seen["VTAX_CONDITION"] == "base" and "VTAX_RUN_ID" in seen and "PATH" in seen
    assert not {"VTAX_VCENTER_PASSWORD", "VTAX_INFLUX_TOKEN", "VTAX_LAB_TOKEN", "AWS_SECRET_ACCESS_KEY"} & set(seen)
