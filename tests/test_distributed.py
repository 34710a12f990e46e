"""The distributed engine with a real redis-server and real `vtax agent` workers on loopback."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import psutil
import pytest
import redis
from celery import Celery

from agent.broker import queue_for
from tests.cluster import Agents, RedisServer
from tests.conftest import Vtax

PAIR_SPEC = """\
name: pair
agents: [{name: c, address: 127.0.0.1}, {name: s, address: 127.0.0.1}]
conditions:
  - name: direct
    baseline: true
    setup: "echo setup $VTAX_TRIAL >> hooks.log"
    teardown: "echo teardown $VTAX_TRIAL >> hooks.log"
  - {name: again, setup: "true"}
workloads:
  - kind: iperf3
    topology: pairs
    pairs: [{client: c, server: s}]
timing: {warmup: 0.5, steady: STEADY, cooldown: 0, lead: 0.5, grace: 3}
repetitions: 2
"""


REPLIES = "vtax:replies:0123456789abcdef"  # a reply list as a controller names one (agent.broker.Keys)


def pair_spec(steady: float = 1.5) -> str:
    return PAIR_SPEC.replace("STEADY", str(steady))


def iperf3_clients() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "iperf3" and "-c" in cmdline:
            found.append(proc)
    return found


def wait_for(condition, timeout: float, what: str) -> float:
    """Poll until `condition()` holds; returns how long it took."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - began


def test_agents_register_and_are_listed(vtax: Vtax, broker: RedisServer, agents: Agents) -> None:
    agents.start("web1", broker, zone="web")
    agents.start("db1", broker, zone="db", allow=["127.0.0.0/8", "198.18.0.0/15"])
    done = vtax("agents", "--broker", broker.url, "--json")
    assert done.returncode == 0, done.stderr
    listed = {a["name"]: a for a in json.loads(done.stdout)}
    assert set(listed) == {"web1", "db1"}
    assert listed["web1"]["zone"] == "web" and listed["db1"]["allow"] == ["127.0.0.0/8", "198.18.0.0/15"]
    for identity in listed.values():
        assert {"hostname", "vm_uuid", "addresses", "cores", "memory_bytes", "kernel", "iperf3", "vtax"} <= set(
            identity
        )
        assert time.time() - identity["heartbeat"] < 5
    table = vtax("agents", "--broker", broker.url)
    assert "web1" in table.stdout and "db1" in table.stdout


def test_unreachable_broker_is_exit_3(vtax: Vtax) -> None:
    done = vtax("agents", "--broker", "redis://127.0.0.1:1/0")
    assert done.returncode == 3 and "unreachable" in done.stderr and "Traceback" not in done.stderr


def test_distributed_run_records_clocks_and_skew(vtax: Vtax, broker: RedisServer, agents: Agents) -> None:
    agents.start("c", broker)
    agents.start("s", broker)
    done, result = vtax.run_json(vtax.spec(pair_spec()), "--broker", broker.url)
    assert done.returncode in (0, 1), done.stderr
    assert result["engine"] == "distributed"
    assert [t["status"] for t in result["trials"]] == ["ok"] * 4
    assert set(result["clocks"]) == {"c", "s"}
    for reading in result["clocks"].values():
        assert abs(reading["offset_s"]) < 0.05 and reading["uncertainty_s"] >= 0
    assert result["start_skew_ms"]["max"] is not None and result["start_skew_ms"]["max"] < 50
    assert result["metrics"]["iperf3.throughput_gbps"]["overhead"]["again"]["ci95_pct"] is not None


def test_a_pickled_message_is_refused(broker: RedisServer, agents: Agents) -> None:
    agents.start("a1", broker)
    sender = Celery("attacker", broker=broker.url)
    sender.conf.update(task_serializer="pickle", accept_content=["pickle", "json"])
    sender.send_task(
        "vtax.ping",
        kwargs={"id": 1, "agent": "a1", "reply_to": REPLIES, "kwargs": {}},
        queue=queue_for("a1"),
        serializer="pickle",
    )
    wait_for(lambda: "untrusted content" in agents.log("a1").read_text(), 10, "the refusal in the agent's log")
    assert "pickle" in agents.log("a1").read_text().split("untrusted content")[1][:80]
    client = redis.Redis.from_url(broker.url)
    assert client.llen(REPLIES) == 0  # the task never ran
    sender.send_task(
        "vtax.ping",
        kwargs={"id": 2, "agent": "a1", "reply_to": REPLIES, "kwargs": {}},
        queue=queue_for("a1"),
        serializer="json",
    )
    reply = client.blpop([REPLIES], timeout=10)
    assert reply is not None and json.loads(reply[1])["ok"]  # and the agent still serves JSON


def test_a_target_outside_the_allowlist_is_refused(vtax: Vtax, broker: RedisServer, agents: Agents) -> None:
    agents.start("c", broker)  # allows loopback only
    spec = vtax.spec("""\
        name: outside
        agents: [{name: c}]
        conditions: [{name: only, baseline: true}]
        workloads: [{kind: iperf3, agents: [c], params: {target: "198.18.200.1:5201"}}]
        timing: {warmup: 0, steady: 1, cooldown: 0, lead: 0.3}
        repetitions: 1
        """)
    done, _ = vtax.run_json(spec, "--broker", broker.url)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "refused" in line and "198.18.200.1" in line and "allowlist" in line and "--allow" in line
    assert "Traceback" not in done.stderr


def test_an_agent_killed_mid_trial_is_noticed_and_the_run_goes_on(
    vtax: Vtax, broker: RedisServer, agents: Agents
) -> None:
    agents.start("c", broker)
    agents.start("s", broker)
    spec = pair_spec(steady=30).replace("repetitions: 2", "repetitions: 1")
    spec = vtax.spec(spec + "rejoin_timeout: 1\nagent_lost_after: 5\n")
    proc = vtax.start("run", str(spec), "--broker", broker.url, "--json", "out.json")
    wait_for(lambda: bool(iperf3_clients()), 20, "the load to start")
    agents.kill("c")
    killed_at = time.time()
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    result = json.loads((vtax.workdir / "out.json").read_text())
    first = result["trials"][0]
    assert first["status"] == "incomplete" and "no heartbeat" in first["reason"]
    assert len(result["trials"]) == 2 and result["status"] == "completed"  # the run went on
    db = sqlite3.connect(vtax.store)
    (ended,) = db.execute("SELECT ended FROM trials WHERE run_id = ? AND idx = 0", (result["run_id"],)).fetchone()
    assert ended - killed_at < 10, f"the loss was noticed {ended - killed_at:.1f} s after the kill (5 s asked)"


def test_a_broker_restart_mid_run_is_survived(vtax: Vtax, broker: RedisServer, agents: Agents) -> None:
    agents.start("c", broker)
    agents.start("s", broker)
    spec = vtax.spec(pair_spec(steady=2).replace("repetitions: 2", "repetitions: 3"))
    proc = vtax.start("run", str(spec), "--broker", broker.url, "--json", "out.json")
    wait_for(lambda: bool(iperf3_clients()), 30, "the first trial's load")
    broker.stop()
    time.sleep(2)
    broker.start()
    _, err = proc.communicate(timeout=150)
    assert proc.returncode in (0, 1), err
    result = json.loads((vtax.workdir / "out.json").read_text())
    assert result["status"] == "completed" and len(result["trials"]) == 6
    assert result["trials"][-1]["status"] == "ok"  # reconnected: later trials measure again
    assert sum(t["status"] == "ok" for t in result["trials"]) >= 4


def test_the_deadline_stops_load_when_the_controller_is_gone(
    vtax: Vtax, broker: RedisServer, agents: Agents, silent_server: int
) -> None:
    agents.start("c", broker)
    spec = vtax.spec(f"""\
        name: orphan
        agents: [{{name: c}}]
        conditions: [{{name: only, baseline: true}}]
        workloads: [{{kind: iperf3, agents: [c], params: {{target: "127.0.0.1:{silent_server}"}}}}]
        timing: {{warmup: 0, steady: 1, cooldown: 0, grace: 3, lead: 0.3}}
        repetitions: 1
        """)
    proc = vtax.start("run", str(spec), "--broker", broker.url)
    wait_for(lambda: any(str(silent_server) in " ".join(p.cmdline()) for p in iperf3_clients()), 20, "the hung client")
    proc.send_signal(signal.SIGKILL)  # the controller is gone; no one will cancel anything
    proc.wait()
    took = wait_for(
        lambda: not any(str(silent_server) in " ".join(p.cmdline()) for p in iperf3_clients()), 10, "the deadline kill"
    )
    assert took > 0.5, "the client was stopped at the deadline, not by the controller's death"


def test_ctrl_c_stops_every_agents_load_within_2_s(vtax: Vtax, broker: RedisServer, agents: Agents) -> None:
    agents.start("c", broker)
    agents.start("s", broker)
    spec = vtax.spec(pair_spec(steady=60))
    proc = vtax.start("run", str(spec), "--broker", broker.url)
    wait_for(lambda: bool(iperf3_clients()), 20, "the load")
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: not iperf3_clients(), 2.0, "every agent to stop its load")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert (vtax.workdir / "hooks.log").read_text().splitlines() == ["setup 0", "teardown 0"]


def test_the_controller_side_relay_is_refused_with_a_broker(vtax: Vtax) -> None:
    relayed = pair_spec().replace('{name: again, setup: "true"}', "{name: relay, appliance: relay}")
    done = vtax("run", str(vtax.spec(relayed)), "--broker", "redis://127.0.0.1:1/0")
    assert done.returncode == 2
    assert "condition 'relay': the built-in relay" in done.stderr and "Traceback" not in done.stderr


def test_an_agent_that_is_restarted_rejoins_and_only_the_trial_it_missed_is_lost(
    vtax: Vtax, broker: RedisServer, agents: Agents
) -> None:
    """SIGKILL an agent mid-trial and start it again once the loss is seen: the next trials wait for it."""
    agents.start("c", broker)
    agents.start("s", broker)
    spec = vtax.spec(pair_spec(steady=3) + "rejoin_timeout: 60\nagent_lost_after: 5\n")
    proc = vtax.start("run", str(spec), "--broker", broker.url, "--json", "out.json")
    wait_for(lambda: bool(iperf3_clients()), 20, "the first trial's load")
    agents.kill("c")
    time.sleep(6)  # the controller gives up on it after 5 s without a heartbeat (agent_lost_after)
    restarted = time.time()
    agents.start("c", broker)
    out, err = proc.communicate(timeout=120)
    result = json.loads((vtax.workdir / "out.json").read_text())
    statuses = [t["status"] for t in result["trials"]]
    assert statuses == ["incomplete", "ok", "ok", "ok"], err
    assert "waiting up to 60 s" in out and "back after" in out, out
    second = result["trials"][1]
    assert second["start_at"] - restarted < 8, "the trial after the loss started soon after the agent was back"
    [rejoin] = result["agent_rejoins"]
    assert rejoin["back"] == ["c"] and rejoin["missing"] == []


def test_a_paused_agent_rejoins_when_it_resumes_and_runs_no_stale_load(
    vtax: Vtax, broker: RedisServer, agents: Agents
) -> None:
    """SIGSTOP an agent (a frozen VM) for 8 s, past `agent_lost_after`: the trial it froze in is incomplete, the
    run waits for it, and what waited in its queue meanwhile is not run late."""
    agents.start("c", broker)
    agents.start("s", broker)
    spec = pair_spec(steady=2).replace("repetitions: 2", "repetitions: 1")
    spec = vtax.spec(spec + "rejoin_timeout: 60\nagent_lost_after: 5\n")
    proc = vtax.start("run", str(spec), "--broker", broker.url, "--json", "out.json")
    wait_for(lambda: bool(iperf3_clients()), 20, "the first trial's load")
    paused = agents.procs["c"]
    os.killpg(paused.pid, signal.SIGSTOP)
    time.sleep(8)
    os.killpg(paused.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    result = json.loads((vtax.workdir / "out.json").read_text())
    statuses = [t["status"] for t in result["trials"]]
    assert statuses == ["incomplete", "ok"], (statuses, err)


def test_a_malformed_reply_is_dropped_and_the_run_goes_on(vtax: Vtax, broker: RedisServer, agents: Agents) -> None:
    """Replies that are not JSON, not an object, or an AgentResult with an unknown status, pushed onto the run's
    reply list mid-run: logged and dropped, never fatal to the controller's reply thread."""
    agents.start("c", broker)
    agents.start("s", broker)
    spec = vtax.spec(pair_spec(steady=2).replace("repetitions: 2", "repetitions: 1"))
    proc = vtax.start("run", str(spec), "--broker", broker.url, "--json", "out.json")
    client = redis.Redis.from_url(broker.url)
    key = _reply_list_of_the_run(client)
    # an id no call of the run has: a reply of the wrong shape to a pending call would fail that call (next test)
    wrong = json.dumps({"id": 10**9, "agent": "c", "ok": True, "result": {"status": "?"}})
    for junk in ("not json {", "[1, 2]", wrong):
        client.rpush(key, junk)
    _, err = proc.communicate(timeout=120)
    assert (vtax.workdir / "out.json").exists(), err
    result = json.loads((vtax.workdir / "out.json").read_text())
    assert [t["status"] for t in result["trials"]] == ["ok"] * 2, err
    assert "does not fit the wire" in err and "Traceback" not in err


def _reply_list_of_the_run(client: redis.Redis) -> str:
    """The reply list the controller waits on (it is empty, hence absent, most of the time): from MONITOR."""
    with client.monitor() as monitor:
        for command in monitor.listen():
            words = command["command"].split()
            if words and words[0].upper() == "BLPOP" and words[1].startswith("vtax:replies:"):
                return str(words[1])
    raise AssertionError("the controller never waited for a reply")


def test_a_reply_of_the_wrong_shape_fails_only_that_agents_call(broker: RedisServer) -> None:
    """An agent that answers with a result its task cannot have (an unknown status) is an error of that agent."""
    from agent.identity import version
    from agent.settings import BrokerConfig
    from controller.distributed import CeleryEngine
    from controller.errors import InfrastructureError

    client = redis.Redis.from_url(broker.url)
    client.set("vtax:agent:fake", json.dumps({"name": "fake", "vtax": version(), "heartbeat": time.time()}))
    with CeleryEngine(BrokerConfig(url=broker.url), ["fake"]) as engine:
        future = engine.call("fake", "vtax.run_workload", {})  # type: ignore[typeddict-item]
        reply = {
            "id": 1,
            "agent": "fake",
            "ok": True,
            "result": {"agent": "fake", "workload": "w", "status": "odd", "reason": "", "samples": [], "summary": {}},
        }
        client.rpush(engine._reply_key, json.dumps(reply))
        with pytest.raises(InfrastructureError, match=r"does not fit.*status"):
            future.result(timeout=10)
        ping = engine.call("fake", "vtax.ping", {})
        client.rpush(engine._reply_key, json.dumps({"id": 2, "agent": "fake", "ok": True, "result": {"time": 1.5}}))
        assert ping.result(timeout=10) == {"time": 1.5}  # the reply thread lives on


def test_an_agent_refuses_more_load_tasks_than_its_concurrency_naming_the_limit(
    vtax: Vtax, broker: RedisServer, agents: Agents
) -> None:
    """The controller refuses, before any load, a trial that asks one agent process for more load tasks than it
    runs at once; the agent itself refuses the task beyond its limit at once instead of starting it late."""
    agents.start("c", broker, env={"VTAX_CONCURRENCY": "3"})
    flows = "".join(f"  - {{kind: noop, name: n{i}, agents: [c]}}\n" for i in range(5))
    spec = vtax.spec(
        "name: many\nagents: [{name: c}]\nconditions: [{name: only, baseline: true}]\nworkloads:\n"
        + flows
        + "timing: {warmup: 0, steady: 1, cooldown: 0, lead: 0.3}\nrepetitions: 1\n"
    )
    done = vtax("run", str(spec), "--broker", broker.url)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "5 load tasks" in line and "3 their process runs at once" in line and "--concurrency" in line

    client = redis.Redis.from_url(broker.url)
    sender = Celery("direct", broker=broker.url)
    start_at = time.time() + 1.5
    request = {
        "agent": "c",
        "workload": "n",
        "kind": "noop",
        "params": {},
        "target": None,
        "start_at": start_at,
        "duration": 1.0,
        "deadline": start_at + 3,
        "warmup": 0.0,
        "steady": 1.0,
        "tags": {
            "run": "r",
            "trial": 0,
            "condition": "only",
            "repetition": 0,
            "zone": None,
            "workload": "n",
            "kind": "noop",
            "role": "client",
        },
    }
    for i in range(5):
        sender.send_task(
            "vtax.run_workload",
            kwargs={"id": i, "agent": "c", "reply_to": REPLIES, "kwargs": request, "clock_offset": 0.0},
            queue=queue_for("c"),
        )
    replies = [json.loads(client.blpop([REPLIES], timeout=15)[1]) for _ in range(5)]
    refused = [r for r in replies if not r["ok"]]
    assert len(refused) == 2 and all(r["refused"] and "its limit" in r["error"] for r in refused)
    assert sum(r["ok"] and r["result"]["status"] == "ok" for r in replies) == 3


def test_no_trial_outlasts_the_brokers_visibility_timeout() -> None:
    """Redis redelivers a message left unacked past its visibility timeout (celery #5935): it is set, above the
    longest trial a spec allows, and messages are acked as they are taken."""
    from agent.broker import make_app
    from agent.settings import BrokerConfig
    from controller.spec import Timing

    conf = make_app(BrokerConfig(url="redis://127.0.0.1:1/0"), "controller").conf
    longest = max(f.le for f in Timing.model_fields["steady"].metadata if hasattr(f, "le"))
    grace = max(f.le for f in Timing.model_fields["grace"].metadata if hasattr(f, "le"))
    assert conf.broker_transport_options["visibility_timeout"] > longest + 3 * 3600 + grace
    assert conf.task_acks_late is False


def test_agents_of_another_vtax_are_refused_unless_mixed_versions_are_allowed(vtax: Vtax, broker: RedisServer) -> None:
    """The fleet is kept in step: an agent that registers another version stops the run before anything is sent
    (exit 3, naming it); --allow-mixed-versions goes on (and the result warns, `version_mismatch`)."""
    from agent.identity import version
    from agent.settings import BrokerConfig
    from controller.distributed import CeleryEngine

    client = redis.Redis.from_url(broker.url)
    for name, found in (("c", "0.0.1.dev1+gold"), ("s", version())):
        client.set(f"vtax:agent:{name}", json.dumps({"name": name, "vtax": found, "heartbeat": time.time()}), ex=60)
    done = vtax("run", str(vtax.spec(pair_spec())), "--broker", broker.url)
    assert done.returncode == 3, done.stderr
    assert f"agents run another vtax than this controller ({version()}): c (0.0.1.dev1+gold);" in done.stderr
    assert "--allow-mixed-versions" in done.stderr and "Traceback" not in done.stderr
    with CeleryEngine(BrokerConfig(url=broker.url), ["c", "s"], mixed_versions=True) as engine:
        assert engine.identity("c")["vtax"] == "0.0.1.dev1+gold"


def test_a_trial_whose_start_an_agent_received_too_late_is_flagged_left_out_and_the_lead_grows(
    vtax: Vtax, broker: RedisServer, agents: Agents
) -> None:
    """Agent b is stopped (SIGSTOP) while the first trial's tasks are sent and resumed 0.8 s later, half a second
    after the common start: it runs late, its trial is flagged and left out, and the next trials get twice the
    lead."""
    agents.start("a", broker)
    agents.start("b", broker)
    pid = agents.procs["b"].pid
    stall = f"[ -e stalled ] || {{ touch stalled; kill -STOP {pid}; (sleep 0.8; kill -CONT {pid}) >/dev/null 2>&1 & }}"
    spec = vtax.spec(
        "name: late\nagents: [{name: a}, {name: b}]\n"
        f"conditions: [{{name: only, baseline: true, setup: '{stall}'}}]\n"
        "workloads: [{kind: noop, agents: [a, b]}]\n"
        "timing: {warmup: 0, steady: 1, cooldown: 0, lead: 0.3, grace: 2}\nrepetitions: 3\n"
    )
    done, result = vtax.run_json(spec, "--broker", broker.url)
    assert done.returncode == 1, done.stdout + done.stderr  # an excluded trial fails the run
    found = [(v["code"], v.get("trial")) for v in result["validity"] if v["level"] == "error"]
    assert sorted(found) == [("start_received_late", 0), ("trial_excluded", 0)]
    [late] = [v["message"] for v in result["validity"] if v["code"] == "start_received_late"]
    assert "1 agent(s) received the start time too late to start together (b; the latest +0." in late
    lead = float(late.split("with a lead of ")[1].split(" s")[0])
    assert f"the next trials' lead is {2 * lead:.2f} s at least" in late
    assert [t["status"] for t in result["trials"]] == ["ok", "ok", "ok"]


def test_clock_sync_pings_each_agent_until_its_offset_is_known_well_enough(broker: RedisServer, agents: Agents) -> None:
    """Real agents on this machine (true offset 0): every agent gets MIN_ROUNDS pings, and more only while its
    offset is known less well than asked; each exchange is timed from its own send, so the offset lies within
    its uncertainty of 0."""
    from agent.settings import BrokerConfig
    from controller import clock
    from controller.distributed import CeleryEngine

    agents.start("p1", broker)
    agents.start("p2", broker)
    with CeleryEngine(BrokerConfig(url=broker.url), ["p1", "p2"]) as engine:
        pings: list[str] = []
        send = engine.call_all
        engine.call_all = lambda calls: (pings.extend(c.agent for c in calls), send(calls))[1]  # type: ignore[method-assign]
        coarse = clock.measure(engine, ["p1", "p2"], good_enough=1.0)
        assert sorted(pings) == ["p1"] * clock.MIN_ROUNDS + ["p2"] * clock.MIN_ROUNDS
        pings.clear()
        fine = clock.measure(engine, ["p1", "p2"], good_enough=0.0)
        assert sorted(pings) == ["p1"] * clock.ROUNDS + ["p2"] * clock.ROUNDS
    for reading in [*coarse.values(), *fine.values()]:
        assert 0 < reading.rtt_s < 0.5 and abs(reading.offset_s) <= reading.uncertainty_s + 0.001
