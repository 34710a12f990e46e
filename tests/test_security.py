"""A secure deployment, as docs/how-to/secure-deployment.md sets it up: redis-server 7 on a TLS port with client
certificates and the ACL users of `vtax certs init`, a key prefix, and agents that run only tasks signed by the
controller. Forged, unsigned and replayed tasks do nothing but a log line; no password shows anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.broker import Keys, make_app, queue_for
from agent.settings import BrokerConfig
from controller.certs import side_settings
from tests.cluster import Agents, RedisServer
from tests.conftest import VTAX, Vtax

PREFIX = "site1:"
NOOP = """\
name: secure
agents: [{name: a1}, {name: a2}]
conditions: [{name: base, baseline: true}]
workloads: [{kind: noop, agents: [a1, a2]}]
timing: {warmup: 0, steady: 1, cooldown: 0, lead: 0.5, grace: 2}
repetitions: 2
"""


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Agents]]:
    """One TLS broker with ACL users and two signed agents for the module (each agent takes seconds to start)."""
    workdir = tmp_path_factory.mktemp("secure")
    server = RedisServer(workdir, secure=True, prefix=PREFIX).start()
    agents = Agents(workdir)
    for name in ("a1", "a2"):
        agents.start(name, server, env={**server.env("agent"), "XDG_STATE_HOME": str(workdir / "state")})
    yield server, agents
    agents.stop_all()
    server.stop()


def controller_settings(server: RedisServer, **changes: Any) -> BrokerConfig:
    assert server.certs is not None
    return side_settings(server.certs / "controller").model_copy(update=changes)


def intruder(server: RedisServer, signed_by: Path | None) -> Any:
    """A Celery app of someone who holds an agent's broker password and TLS certificate (a compromised agent
    VM): it can write to every queue of the installation, and signs with `signed_by`'s key, if any."""
    assert server.certs is not None
    agent_side = server.env("agent")
    app = make_app(
        BrokerConfig(
            url=server.url,
            username=agent_side["VTAX_BROKER_USERNAME"],
            password=agent_side["VTAX_BROKER_PASSWORD"],
            certs=signed_by,
            prefix=PREFIX,
        ),
        "controller",
    )
    agent_dir = server.certs / "agent"
    app.conf.broker_use_ssl = {
        "ssl_cert_reqs": 2,
        "ssl_ca_certs": str(agent_dir / "ca.crt"),
        "ssl_certfile": str(agent_dir / "vtax.crt"),
        "ssl_keyfile": str(agent_dir / "vtax.key"),
    }
    return app


def ping(app: Any, request_id: int, reply_to: str, agent: str = "a1") -> str:
    """Send a ping request; returns Celery's id of the message."""
    body = {"id": request_id, "agent": agent, "reply_to": reply_to, "kwargs": {}, "clock_offset": 0.0}
    return str(app.send_task("vtax.ping", kwargs=body, queue=queue_for(agent)).id)


def wait_for_log(agents: Agents, name: str, text: str, after: int = 0) -> str:
    give_up = time.monotonic() + 15
    while time.monotonic() < give_up:
        log = agents.log(name).read_text()[after:]
        if text in log:
            return log
        time.sleep(0.1)
    pytest.fail(f"{text!r} never appeared in agent {name}'s log:\n{agents.log(name).read_text()[-3000:]}")


def test_certs_init_makes_private_keys_and_check_says_what_expires(vtax: Vtax, tmp_path: Path) -> None:
    made = vtax("certs", "init", str(tmp_path / "pki"), "--host", "broker.example", "--host", "10.0.0.5")
    assert made.returncode == 0, made.stderr
    keys = [path for path in (tmp_path / "pki").rglob("*") if path.suffix in (".key", ".env", ".acl")]
    assert len(keys) >= 7 and all(path.stat().st_mode & 0o077 == 0 for path in keys)
    checked = vtax("certs", "check", str(tmp_path / "pki"), "--json")
    assert checked.returncode == 0, checked.stdout
    found = {Path(c["path"]).parts: c for c in json.loads(checked.stdout)}
    assert {c["status"] for c in found.values()} == {"ok"}
    assert 396 < found[("controller", "vtax.crt")]["days_left"] <= 397 and found[("ca", "ca.crt")]["days_left"] > 3600
    soon = vtax("certs", "check", str(tmp_path / "pki"), "--warn-days", "400")
    assert soon.returncode == 1 and "expires_soon" in soon.stdout
    vtax("certs", "init", str(tmp_path / "other"), "--host", "x")
    shutil.copy(tmp_path / "other" / "controller" / "vtax.crt", tmp_path / "pki" / "agent" / "trusted" / "rogue.crt")
    rogue = json.loads(vtax("certs", "check", str(tmp_path / "pki"), "--json").stdout)
    assert {Path(c["path"]).parts: c["status"] for c in rogue}[("agent", "trusted", "rogue.crt")] == "untrusted"
    again = vtax("certs", "init", str(tmp_path / "pki"), "--host", "x")
    assert again.returncode == 2 and "never overwrites" in again.stderr


def test_a_run_over_tls_with_signed_tasks_and_acl_users_shows_no_secret(
    vtax: Vtax, secure: tuple[RedisServer, Agents]
) -> None:
    server, agents = secure
    side = server.env("controller")
    vtax.extra_env = side  # as `set -a; . DIR/controller/broker.env` gives it: no password on the command line
    done, result = vtax.run_json(vtax.spec(NOOP))
    assert done.returncode == 0, done.stderr
    [run] = json.loads(vtax("runs", "--json").stdout)
    assert run["engine"] == "distributed" and run["status"] == "completed" and run["trials"] == 2
    admin = server.client()
    assert admin.execute_command("ACL", "LOG") == []  # neither side needed a command or key its ACL user lacks
    assert all(key.decode().startswith(PREFIX) for key in admin.scan_iter("*"))
    secrets = [side["VTAX_BROKER_PASSWORD"], server.env("agent")["VTAX_BROKER_PASSWORD"]]
    shown = [
        done.stdout + done.stderr,
        json.dumps(result),
        vtax.store.read_bytes().decode("utf-8", "replace"),
        vtax("agents", "--json").stdout,
        *(agents.log(name).read_text() for name in ("a1", "a2")),
        *(" ".join(psutil.Process(proc.pid).cmdline()) for proc in agents.procs.values()),
    ]
    for secret in secrets:
        assert not any(secret in text for text in shown)


def test_unsigned_and_foreign_signed_tasks_do_nothing_but_a_log_line(
    secure: tuple[RedisServer, Agents], tmp_path: Path
) -> None:
    server, agents = secure
    assert server.certs is not None
    subprocess.run([VTAX, "certs", "init", str(tmp_path / "other"), "--host", "x"], check=True, capture_output=True)
    foreign = tmp_path / "other" / "controller"
    shutil.copy(server.certs / "controller" / "ca.crt", foreign / "ca.crt")  # the CA certificate is no secret
    replies = Keys(PREFIX).replies("00000000000000aa")
    before = len(agents.log("a1").read_text())
    unsigned = ping(intruder(server, None), 1, replies)
    log = wait_for_log(agents, "a1", "refused a message (unsigned", before)
    forged = ping(intruder(server, foreign), 2, replies)
    log = wait_for_log(agents, "a1", "refused a message (bad signature", before)
    assert f"id {unsigned}" in log and f"id {forged}" in log and "claimed origin" in log
    assert "Traceback" not in log and f"[{unsigned}] received" not in log and f"[{forged}] received" not in log
    admin = server.client()
    assert admin.llen(replies) == 0  # nothing ran
    genuine = make_app(controller_settings(server), "controller")
    ping(genuine, 3, replies)  # the agent goes on: a task the controller signed runs
    reply = admin.blpop([replies], timeout=10)
    assert reply is not None and json.loads(reply[1])["ok"] and json.loads(reply[1])["id"] == 3


def test_a_replayed_task_and_a_reply_list_of_no_controller_are_refused(secure: tuple[RedisServer, Agents]) -> None:
    server, agents = secure
    genuine = make_app(controller_settings(server), "controller")
    replies = Keys(PREFIX).replies("00000000000000bb")
    before = len(agents.log("a1").read_text())
    ping(genuine, 7, replies)
    ping(genuine, 7, replies)  # the same signed request again, as a replay of the captured message would be
    wait_for_log(agents, "a1", "arrived a second time", before)
    admin = server.client()
    assert admin.blpop([replies], timeout=10) is not None and admin.llen(replies) == 0
    ping(genuine, 8, f"{PREFIX}vtax:agent:a2")  # a signed request cannot make it write another agent's key
    wait_for_log(agents, "a1", "which no controller does", before)
    assert json.loads(admin.get(f"{PREFIX}vtax:agent:a2"))["name"] == "a2"


def test_a_controller_that_does_not_sign_is_refused_before_anything_is_sent(
    vtax: Vtax, secure: tuple[RedisServer, Agents], broker: RedisServer, agents: Agents
) -> None:
    """Agents that verify signatures and a controller that signs nothing (or the other way round) would have
    every task refused: the run says so at once. (On a plain broker: without its directory, the controller
    could not reach the TLS one at all.)"""
    server, _ = secure
    assert server.certs is not None
    agents.start("a1", broker, env={"VTAX_BROKER_CERTS": str(server.certs / "agent")})
    agents.start("a2", broker)
    two = vtax.spec(NOOP)
    unsigned = vtax("run", str(two), "--broker", broker.url)
    assert unsigned.returncode == 2 and "agents a1 run only signed tasks" in unsigned.stderr, unsigned.stderr
    signing = vtax("run", str(two), "--broker", broker.url, "--broker-certs", str(server.certs / "controller"))
    assert signing.returncode == 2 and "agents a2 do not verify signatures" in signing.stderr, signing.stderr
    assert "Traceback" not in unsigned.stderr + signing.stderr


@pytest.mark.parametrize("mistake", ["another CA", "no client certificate", "plain redis://", "wrong password"])
def test_a_broker_misconfigured_says_what_to_do(
    vtax: Vtax, secure: tuple[RedisServer, Agents], tmp_path: Path, mistake: str
) -> None:
    server, _ = secure
    assert server.certs is not None
    side = server.env("controller")
    side.pop("VTAX_BROKER_CERTS")
    certs = server.certs / "controller"
    if mistake == "another CA":
        subprocess.run([VTAX, "certs", "init", str(tmp_path / "x"), "--host", "x"], check=True, capture_output=True)
        certs, expected = tmp_path / "x" / "controller", "not signed by the CA in --broker-certs"
    elif mistake == "no client certificate":
        certs = tmp_path / "ca-only"
        shutil.copytree(server.certs / "controller", certs)
        os.remove(certs / "vtax.key")
        expected = "vtax.key: missing"
    elif mistake == "plain redis://":
        side["VTAX_BROKER"] = server.url.replace("rediss://", "redis://")
        expected = "use rediss://"
    else:
        side["VTAX_BROKER_PASSWORD"] = "not-it"
        expected = "VTAX_BROKER_PASSWORD"
    vtax.extra_env = side
    done = vtax("agents", "--broker-certs", str(certs))
    assert done.returncode in (2, 3) and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_renewed_agents_accept_the_old_and_the_new_controller_during_a_rotation(
    secure: tuple[RedisServer, Agents], tmp_path: Path
) -> None:
    server, agents = secure
    assert server.certs is not None
    renewed = tmp_path / "renewed"
    done = subprocess.run([VTAX, "certs", "renew", str(server.certs), str(renewed)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    trusted = [p.name for p in (renewed / "agent" / "trusted").iterdir()]
    assert "controller.crt" in trusted and len(trusted) == 2  # the old controller's, and the new one's
    agents.kill("a2")
    env = {**server.env("agent"), "VTAX_BROKER_CERTS": str(renewed / "agent"), "XDG_STATE_HOME": str(tmp_path)}
    agents.start("a2", server, env=env)  # its new TLS certificate is of the same CA, its password the same
    replies = Keys(PREFIX).replies("00000000000000cc")
    admin = server.client()
    for request_id, controller in ((1, server.certs / "controller"), (2, renewed / "controller")):
        ping(make_app(controller_settings(server, certs=controller), "controller"), request_id, replies, "a2")
        reply = admin.blpop([replies], timeout=10)
        assert reply is not None and json.loads(reply[1])["id"] == request_id and json.loads(reply[1])["ok"]


def test_the_secure_deployment_page_shows_the_acl_rules_the_tests_run_on() -> None:
    from controller.certs import acl_rules

    page = (Path(__file__).parents[1] / "docs" / "how-to" / "secure-deployment.md").read_text()
    for rules in acl_rules("").values():
        assert rules in page
