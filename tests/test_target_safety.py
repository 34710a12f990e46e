"""An agent sends load only where its allowlist says, whatever the request, the server's answer or the name's
resolution does; and it writes only into directories of its own. Real locust, real listeners on loopback."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import workloads
from agent import wire
from agent.edge import AgentHost, execute
from agent.safety import Allowlist, RateLimits, Refused, private_dir
from agent.sink import Spool
from workloads import http, iperf3

ONLY_127_0_0_1 = Allowlist(["127.0.0.1/32"])


class Listener:
    """A TCP listener that counts the connections it is sent; it answers each with `reply` (or nothing)."""

    def __init__(self, host: str, reply: bytes = b"") -> None:
        self.sock = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self._reply:
                conn.recv(65536)
                conn.sendall(self._reply)
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def outside() -> Iterator[Listener]:
    """A listener on 127.0.0.2: loopback, but outside an allowlist of 127.0.0.1/32."""
    listener = Listener("127.0.0.2")
    yield listener
    listener.close()


def run_request(target: object, params: dict[str, object] | None = None, seconds: float = 1.5) -> wire.Request:
    start_at = time.time() + 1.5  # locust needs about a second to import
    tags: wire.ClientTags = {
        "run": "r",
        "trial": 0,
        "condition": "c",
        "repetition": 0,
        "zone": None,
        "workload": "http",
        "kind": "http",
        "role": "client",
    }
    return {
        "id": 1,
        "task": wire.RUN_WORKLOAD,
        "kwargs": {
            "agent": "a",
            "workload": "http",
            "kind": "http",
            "params": {"users": 2, **(params or {})},
            "target": target,
            "start_at": start_at,
            "duration": seconds,
            "deadline": start_at + seconds + 5,
            "tags": tags,
            "warmup": 0.0,
            "steady": seconds,
        },  # type: ignore[typeddict-item]
        "clock_offset": 0.0,
    }


def execute_one(request: wire.Request, host: AgentHost | None = None) -> wire.Reply:
    replies: list[wire.Message] = []
    execute(request, host or AgentHost(name="a", allowlist=ONLY_127_0_0_1), replies.append)
    return next(r for r in replies if "ok" in r)  # type: ignore[return-value]


def test_a_port_that_smuggles_another_host_is_refused(outside: Listener) -> None:
    reply = execute_one(run_request({"host": "127.0.0.1", "port": f"1@127.0.0.2:{outside.port}"}))
    assert not reply["ok"] and "port" in reply["error"]
    assert outside.connections == 0


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_a_port_outside_1_to_65535_is_refused(port: int) -> None:
    reply = execute_one(run_request({"host": "127.0.0.1", "port": port}))
    assert not reply["ok"] and "port" in reply["error"]


def test_a_host_that_reads_as_an_option_is_refused() -> None:
    reply = execute_one(run_request({"host": "--logfile=/tmp/x", "port": 80}))
    assert not reply["ok"] and "host" in reply["error"]


def test_a_redirect_outside_the_allowlist_is_not_followed(outside: Listener) -> None:
    redirecting = Listener(
        "127.0.0.1",
        f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:{outside.port}/\r\nContent-Length: 0\r\n\r\n".encode(),
    )
    try:
        for user_class in ("fast", "http"):
            reply = execute_one(
                run_request({"host": "127.0.0.1", "port": redirecting.port}, {"user_class": user_class})
            )
            assert reply["ok"], reply
            assert redirecting.connections > 0, "the load reached the allowed server"
        assert outside.connections == 0, "a redirect took load outside the allowlist"
    finally:
        redirecting.close()


def test_a_locustfile_that_names_another_host_reaches_nothing_outside(outside: Listener, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text(
        "from locust import FastHttpUser, constant, task\n"
        "class Elsewhere(FastHttpUser):\n"
        "    wait_time = constant(0.05)\n"
        "    @task\n"
        "    def one(self):\n"
        f"        self.client.get('http://127.0.0.2:{outside.port}/')\n"
    )
    allowed = Listener("127.0.0.1", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    try:
        host = AgentHost(name="a", allowlist=ONLY_127_0_0_1, locustfile_dir=tmp_path)
        request = run_request(
            {"host": "127.0.0.1", "port": allowed.port}, {"scenario": "locustfile", "locustfile": "elsewhere.py"}
        )
        reply = execute_one(request, host)
        assert reply["ok"], reply
        result: wire.AgentResult = reply["result"]  # type: ignore[assignment]
        assert sum(s["values"]["failures_per_s"] for s in result["samples"]) > 0, "the refusals count as failures"
        assert outside.connections == 0
    finally:
        allowed.close()


def test_the_tool_is_given_the_address_that_was_checked() -> None:
    assert ONLY_127_0_0_1.check("localhost") == "127.0.0.1"
    with pytest.raises(Exception, match="outside this agent's allowlist"):
        ONLY_127_0_0_1.check("127.0.0.2")


def test_a_serve_reply_of_the_wrong_shape_is_refused_at_the_controller() -> None:
    with pytest.raises(wire.MalformedMessage, match="port"):
        wire.check_reply(wire.SERVE, {"host": "127.0.0.1", "port": "1@127.0.0.2:80"})
    with pytest.raises(wire.MalformedMessage, match="host"):
        wire.check_reply(wire.SERVE, {"host": "user@127.0.0.2", "port": 80})
    assert wire.check_reply(wire.SERVE, {"host": "::1", "port": 80}) == {"host": "::1", "port": 80}


def test_an_ipv6_http_target_works() -> None:
    target = http.serve(http.HttpParams(target_server="python"), bind="::1", deadline=time.time() + 20)
    reply = execute_one(run_request(target), AgentHost(name="a", allowlist=Allowlist(["::1/128"])))
    assert reply["ok"], reply
    result: wire.AgentResult = reply["result"]  # type: ignore[assignment]
    assert result["status"] == "ok", result["reason"]
    assert sum(s["values"]["rps"] for s in result["samples"]) > 10
    assert http.HttpParams(target="http://[::1]:8080").target == "http://[::1]:8080"


def test_the_nginx_directory_is_private_and_new(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A directory someone planted (with a symlink to a root-owned file) is never used: each agent process
    makes its own with mkdtemp."""
    planted = tmp_path / "vtax-nginx"
    planted.mkdir()
    (planted / "objects").symlink_to(tmp_path / "victim")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    http._nginx_home.cache_clear()
    try:
        home = http._nginx_home()
        command = http._nginx_command("/usr/sbin/nginx", "127.0.0.1", 8080)
    finally:
        http._nginx_home.cache_clear()
    assert home != planted and home.parent == tmp_path and os.stat(home).st_mode & 0o777 == 0o700
    assert str(home) in " ".join(command) and not (tmp_path / "victim").exists()


def test_a_spool_directory_of_someone_else_or_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "spool"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="symlink"):
        private_dir(link)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(ValueError, match="belongs to uid 65534"):
        private_dir(theirs)
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    assert os.stat(private_dir(loose)).st_mode & 0o777 == 0o700
    made = private_dir(tmp_path / "a" / "b")
    assert os.stat(made).st_mode & 0o777 == 0o700 and os.stat(made.parent).st_mode & 0o777 == 0o700


def test_spool_files_that_this_agent_did_not_write_are_never_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    spool.append(["m v=1 1"])
    planted = spool.directory / "00000000000000000001.lp"
    planted.write_text("evil v=1 1\n")
    os.chown(planted, 65534, 65534)
    elsewhere = tmp_path / "outside.lp"
    elsewhere.write_text("evil v=2 1\n")
    (spool.directory / "00000000000000000002.lp").symlink_to(elsewhere)
    segments = spool.segments()
    assert len(segments) == 1 and segments[0].read_text() == "m v=1 1\n"


@pytest.mark.parametrize(
    ("params", "refused"),
    [
        ({"rps": 100}, "http load of 100 requests/s asked; this agent sends at most 50 requests/s (--max-rps)"),
        ({}, "http load without rps is unlimited; this agent sends at most 50 requests/s (--max-rps)"),
    ],
)
def test_an_agents_rate_limit_refuses_more_or_unpaced_load(params: dict[str, object], refused: str) -> None:
    host = AgentHost(name="a", allowlist=ONLY_127_0_0_1, limits=RateLimits(max_rps=50))
    began = time.monotonic()
    reply = execute_one(run_request({"host": "127.0.0.1", "port": 9}, params), host)
    assert reply.get("refused") and reply["error"] == f"refused: {refused}"
    assert time.monotonic() - began < 1  # before anything started


def test_offered_load_is_what_the_parameters_ask_of_one_agent() -> None:
    limits = RateLimits(max_gbps=4.0)
    asked = iperf3.Iperf3Params(bitrate="500M", streams=4, processes=2)
    assert iperf3.offered_load(asked) == {"gbps": 4.0}
    limits.check("iperf3", asked)  # exactly the limit: allowed
    both_ways = asked.model_copy(update={"bidir": True})
    with pytest.raises(Refused, match="8 Gbit/s asked"):
        limits.check("iperf3", both_ways)
    assert iperf3.offered_load(iperf3.Iperf3Params(protocol="udp", streams=3)) == {"gbps": 0.003}  # iperf3's 1M
    with pytest.raises(Refused, match="without a bitrate is unlimited"):
        limits.check("iperf3", iperf3.Iperf3Params())
    RateLimits(max_rps=10).check("iperf3", iperf3.Iperf3Params())  # an HTTP limit does not bound iperf3
    limits.check("cpu", workloads.get("cpu").Params.model_validate({}))  # no network load at all


def test_a_load_task_too_far_ahead_or_with_a_deadline_hours_away_is_refused() -> None:
    ahead = run_request({"host": "127.0.0.1", "port": 9})
    ahead["kwargs"]["start_at"] += 3600  # type: ignore[typeddict-item]
    ahead["kwargs"]["deadline"] += 3600  # type: ignore[typeddict-item]
    reply = execute_one(ahead)
    assert reply.get("refused") and "more than 300 s ahead" in reply["error"]
    late_deadline = run_request({"host": "127.0.0.1", "port": 9})
    late_deadline["kwargs"]["deadline"] += 5 * 3600  # type: ignore[typeddict-item]
    reply = execute_one(late_deadline)
    assert reply.get("refused") and "deadline lies" in reply["error"] and "past its load's end" in reply["error"]
