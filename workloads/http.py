"""HTTP load with locust: GETs of the RFC 9411 object sizes (keep-alive: transactions/s; one request per
connection: connections/s), uploads, or a custom locustfile chosen by name from the agent's own directory.

The server side is nginx where the server agent has it, else vtax's built-in Python target
(`workloads.http_target`), started on the server agent like an iperf3 server. Latency percentiles come
from merged histograms of all agents and seconds, never from averaged percentiles; RFC 9411's validity
rules (failures above 0.001 %, a steady rate varying more than 5 %) and a saturated generator or target
are reported as warnings. Only the Python target reports its own CPU (`target_cpu_pct`).
"""

from __future__ import annotations

import atexit
import functools
import http.client
import json
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import psutil
from pydantic import Field, model_validator

from workloads import histogram
from workloads.base import (
    MetricInfo,
    OfferedLoad,
    RunContext,
    Sample,
    ScaledOutParams,
    Target,
    WorkloadError,
    netloc,
    parse_host_port,
)
from workloads.objects import SIZES
from workloads.serving import start_server

KIND = "http"
HAS_SERVER = True
READY_S = 1.5  # locust imports for 0.9 s on a quiet box, 1.6 s beside other load
PERCENTILES = {"latency_p50_ms": 50.0, "latency_p90_ms": 90.0, "latency_p99_ms": 99.0, "latency_p999_ms": 99.9}
SATURATED_PCT = 85.0  # generator or target CPU in the steady phase above which the result is suspect
RFC9411_MAX_FAILURE_PCT = 0.001
RFC9411_MAX_RATE_DEVIATION_PCT = 5.0

METRICS: dict[str, MetricInfo] = {
    "rps": MetricInfo(unit="1/s", across_agents="sum", better="higher", description="requests completed per second"),
    "throughput_gbps": MetricInfo(
        unit="Gbit/s", across_agents="sum", better="higher", description="response bytes received"
    ),
    "failures_per_s": MetricInfo(unit="1/s", across_agents="sum", better="lower", description="failed requests"),
    "failure_pct": MetricInfo(unit="%", across_agents="sum", better="lower", description="failed / all requests"),
    **{
        name: MetricInfo(unit="ms", across_agents="mean", better="lower", description=f"latency p{q:g}, merged")
        for name, q in PERCENTILES.items()
    },
    "rate_deviation_pct": MetricInfo(
        unit="%", across_agents="mean", better="lower", description="largest steady-phase second off the mean rate"
    ),
    "generator_cpu_pct": MetricInfo(
        unit="% of a core", across_agents="mean", better="lower", description="locust process CPU"
    ),
    "target_cpu_pct": MetricInfo(
        unit="% of a core", across_agents="mean", better="lower", description="built-in target CPU, all workers"
    ),
}


class HttpParams(ScaledOutParams):
    """What each agent's locust does."""

    scenario: Literal["get", "connections", "upload", "locustfile"] = Field(
        "get", description="get: keep-alive GETs; connections: one request per connection; upload: POSTs"
    )
    object_size: Literal["1k", "16k", "64k", "256k"] = Field("16k", description="object (or upload) size, RFC 9411")
    users: int = Field(10, ge=1, le=10_000, description="concurrent locust users on each agent")
    spawn_rate: float = Field(100.0, gt=0, le=100_000, description="users started per second from the trial start")
    user_class: Literal["fast", "http"] = Field("fast", description="FastHttpUser or HttpUser")
    wait_s: float = Field(0.0, ge=0, le=3600, description="think time between one user's requests")
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="locust processes on each agent, the users (and rps) split between them and summed per second "
        "(one locust process is the limit near 9,000 req/s here)",
    )
    rps: float | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description="pace this agent's users to this many requests per second together (locust's "
        "constant_throughput, rps / users each); default: as fast as they go",
    )
    locustfile: str | None = Field(
        None, description="scenario locustfile: a file NAME in the agent's locustfile directory (never a path)"
    )
    target: str | None = Field(None, description="an existing server http://host:port; then no server agent is used")
    target_workers: int = Field(1, ge=1, le=64, description="processes of the built-in Python target")
    target_server: Literal["auto", "nginx", "python"] = Field(
        "auto", description="the server agent's target: nginx where installed (auto), else vtax's Python server"
    )

    @model_validator(mode="after")
    def _check(self) -> HttpParams:
        if (self.scenario == "locustfile") != (self.locustfile is not None):
            raise ValueError("locustfile is required with scenario locustfile, and only then")
        if self.locustfile is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.py", self.locustfile):
            raise ValueError(f"locustfile must be a file name like mytest.py, not a path: {self.locustfile!r}")
        if self.target is not None:
            _parse_target(self.target)
        if self.rps is not None and self.wait_s:
            raise ValueError("rps paces each user itself: give rps or wait_s, not both")
        if self.users < self.processes:
            raise ValueError(f"{self.processes} processes need at least as many users, got {self.users}")
        if self.rps is not None and self.scenario == "locustfile":
            raise ValueError("rps cannot pace a locustfile's users: their wait_time is the locustfile's")
        return self


Params = HttpParams


def _parse_target(url: str) -> Target:
    if not url.startswith("http://"):
        raise ValueError(f"target must look like http://host:port, got {url[:80]!r}")
    return parse_host_port(url.removeprefix("http://").removesuffix("/"))


def external_target(params: HttpParams) -> Target | None:
    return _parse_target(params.target) if params.target else None


def serve(params: HttpParams, *, bind: str, deadline: float) -> Target:
    """Start the target (nginx where installed, else vtax's Python server); `timeout` ends it at the deadline."""
    nginx = shutil.which("nginx") if params.target_server in ("auto", "nginx") else None
    if params.target_server == "nginx" and nginx is None:
        raise WorkloadError("target_server nginx: nginx is not installed on this agent")
    if nginx is not None:
        return start_server(lambda port: _nginx_command(nginx, bind, port), bind=bind, deadline=deadline, what="nginx")
    return start_server(
        lambda port: [
            *(sys.executable, "-m", "workloads.http_target", "--bind", bind),
            *("--port", str(port), "--workers", str(params.target_workers)),
        ],
        bind=bind,
        deadline=deadline,
        what="http target",
    )


@functools.cache
def _nginx_home() -> Path:
    """This agent process's own directory for nginx (mkdtemp: new, 0700), removed when the process ends; never
    a fixed path in /tmp that another local user could prepare with symlinks."""
    home = Path(tempfile.mkdtemp(prefix="vtax-nginx-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home


def _nginx_command(program: str, bind: str, port: int) -> list[str]:
    """nginx as one foreground process (no master: `timeout` must be able to kill all of it) serving the sizes.

    The objects are shared by every trial; each server gets a small directory of its own, and the
    directories of servers that have ended are removed here, so a soak test leaves nothing growing.
    """
    objects = _nginx_home() / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    for name, size in SIZES.items():
        if not (objects / name).exists() or (objects / name).stat().st_size != size:
            (objects / name).write_bytes(b"x" * size)
    for old in _nginx_home().glob("port-*"):
        pid_file = old / "nginx.pid"
        if pid_file.exists() and not psutil.pid_exists(int(pid_file.read_text().strip() or 0)):
            shutil.rmtree(old, ignore_errors=True)
    own = _nginx_home() / f"port-{port}"
    own.mkdir(exist_ok=True)
    listen = f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"
    temp_paths = " ".join(
        f"{kind}_temp_path {own}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (own / "nginx.conf").write_text(
        f"""daemon off; master_process off; worker_processes 1; pid {own}/nginx.pid; error_log {own}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000; default_type application/octet-stream; {temp_paths}
  server {{
    listen {listen} reuseport; root {objects};
    location = /upload {{ client_max_body_size 16m; client_body_buffer_size 1m; return 200; }}
  }}
}}
"""
    )
    return [program, "-c", str(own / "nginx.conf"), "-p", str(own), "-e", str(own / "error.log")]


def _locustfile(params: HttpParams, directory: Path | None) -> str | None:
    """The custom locustfile's path, only if it is a file inside the agent's own locustfile directory."""
    if params.locustfile is None:
        return None
    if directory is None:
        raise WorkloadError("refused: this agent has no locustfile directory (vtax agent --locustfiles DIR)")
    path = (directory / params.locustfile).resolve()
    if path.parent != directory.resolve() or not path.is_file():
        raise WorkloadError(f"refused: locustfile {params.locustfile!r} is not in this agent's directory {directory}")
    return str(path)


def _target_cpu(target: Target) -> float | None:
    """The built-in target's CPU seconds so far, asked of the checked address only: http.client follows no
    redirect, so a target that answers with one cannot send this request elsewhere."""
    connection = http.client.HTTPConnection(target["host"], target["port"], timeout=1)
    try:
        connection.request("GET", "/_vtax/stats")
        reply = connection.getresponse()
        return float(json.loads(reply.read(4096))["cpu_s"]) if reply.status == 200 else None
    except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException):
        return None  # not vtax's built-in target
    finally:
        connection.close()


def run(params: HttpParams, ctx: RunContext) -> Iterator[Sample]:
    """Run locust in `processes` child processes and yield their per-second samples, merged, as they arrive."""
    if ctx.target is None:
        raise WorkloadError("http client has no target server")
    children = [_start_locust(params, ctx, process) for process in range(params.processes)]
    ctx.wait_for_start()  # the children have imported locust meanwhile; they start their users at the common start
    target_cpu, target_t = _target_cpu(ctx.target), time.time()
    try:
        for n, windows in enumerate(_windows(children, ctx)):
            if n == 0:  # each child's first window opens when it started its users
                ctx.released_at(max(w["t"] for w in windows))
            dt = sum(w["dt"] for w in windows) / len(windows)
            values = {
                "rps": _rate(windows, "requests"),
                "throughput_gbps": _rate(windows, "bytes") * 8 / 1e9,
                "failures_per_s": _rate(windows, "failures"),
                "generator_cpu_pct": sum(float(w["cpu_pct"]) for w in windows) / len(windows),  # per process
                "cpu_warning": 1.0 if any(w["cpu_warning"] for w in windows) else 0.0,
            }
            now_cpu, now = _target_cpu(ctx.target), time.time()
            if now_cpu is not None and target_cpu is not None:
                values["target_cpu_pct"] = 100.0 * (now_cpu - target_cpu) / max(now - target_t, 1e-6)
            target_cpu, target_t = now_cpu, now
            ctx.progress({"rps": values["rps"]})
            merged = histogram.merge(w["hist"] for w in windows)
            yield Sample(t=sum(w["t"] for w in windows) / len(windows), dt=dt, values=values, histogram=merged)
    finally:
        errors = []
        for child in children:
            if child.poll() is None:
                child.kill()
            _, err = child.communicate()
            if child.returncode not in (0, -9):
                errors.append(f"locust exited {child.returncode}: {err.decode(errors='replace').strip()[-300:]}")
    if errors:
        raise WorkloadError("; ".join(errors))


def _rate(windows: list[dict[str, Any]], field: str) -> float:
    """A count per second summed over the children, each over its own window (they need not be equally long)."""
    return sum(w[field] / max(w["dt"], 1e-6) for w in windows)


def _start_locust(params: HttpParams, ctx: RunContext, process: int) -> subprocess.Popen[bytes]:
    """Locust child `process` of `params.processes`: its share of the users, of their spawn rate and of the
    paced rate (in proportion to its users), pinned where `affinity` says."""
    assert ctx.target is not None
    users = params.users // params.processes + (1 if process < params.users % params.processes else 0)
    config = {
        **params.model_dump(),
        "users": users,
        "spawn_rate": params.spawn_rate * users / params.users,
        "rps": None if params.rps is None else params.rps * users / params.users,
        "host": f"http://{netloc(ctx.target)}",
        "object_bytes": SIZES[params.object_size],
        "locustfile": _locustfile(params, ctx.locustfile_dir),
        "start_at": ctx.start_at,
        "duration": ctx.duration,
        "allow": list(ctx.allow),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "workloads.locust_child", json.dumps(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    cpu = params.cpu(process)
    if cpu is not None:
        psutil.Process(child.pid).cpu_affinity([cpu])
    return child


def _windows(children: list[subprocess.Popen[bytes]], ctx: RunContext) -> Iterator[list[dict[str, Any]]]:
    """Each second's window from every child, together, as they come; stops the children at the deadline or
    on cancel. Only the seconds every child reported count: a second one child missed would show as a drop in
    the sum (its last, once another has ended, is left out)."""
    streams = {child.stdout: i for i, child in enumerate(children) if child.stdout is not None}
    buffers = [b""] * len(children)
    queued: list[list[dict[str, Any]]] = [[] for _ in children]
    ended: set[int] = set()
    while not any(i in ended and not queued[i] for i in range(len(children))):
        ctx.check_stop()
        open_streams = [stream for stream, i in streams.items() if i not in ended]
        readable, _, _ = select.select(open_streams, [], [], 0.25)
        for stream in readable:
            i = streams[stream]
            chunk = stream.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                ended.add(i)
                continue
            *lines, buffers[i] = (buffers[i] + chunk).split(b"\n")
            queued[i] += [json.loads(line) for line in lines if line.strip()]
        while all(queued):
            yield [q.pop(0) for q in queued]


def histogram_kpis(merged: histogram.Histogram) -> dict[str, float]:
    """The latency percentiles of a merged histogram (of a trial, or of a soak's window of segments)."""
    kpis: dict[str, float] = {}
    for name, q in PERCENTILES.items():
        value = histogram.percentile(merged, q)
        if value is not None:
            kpis[name] = value
    return kpis


def trial_kpis(samples: list[Sample], per_second: dict[str, list[float]]) -> dict[str, float]:
    """Merged-histogram percentiles, the failure ratio and the rate's steadiness of one trial."""
    kpis = histogram_kpis(histogram.merge(s.get("histogram", {}) for s in samples))
    requests = sum(s["values"].get("rps", 0.0) * s["dt"] for s in samples)
    failures = sum(s["values"].get("failures_per_s", 0.0) * s["dt"] for s in samples)
    if requests:
        kpis["failure_pct"] = 100.0 * failures / requests
    rates = per_second.get("rps", [])
    if rates and sum(rates):
        mean = sum(rates) / len(rates)
        kpis["rate_deviation_pct"] = 100.0 * max(abs(r - mean) for r in rates) / mean
    return kpis


def warnings(kpis: dict[str, float], params: HttpParams, cpu_warned: bool) -> list[tuple[str, str]]:
    """Validity findings of one trial: (code, message)."""
    found = []
    if kpis.get("failure_pct", 0.0) > RFC9411_MAX_FAILURE_PCT:
        found.append(("http_failures", f"{kpis['failure_pct']:.4f} % of requests failed (RFC 9411 allows 0.001 %)"))
    if kpis.get("rate_deviation_pct", 0.0) > RFC9411_MAX_RATE_DEVIATION_PCT:
        found.append(
            (
                "http_rate_unsteady",
                f"the request rate varied by {kpis['rate_deviation_pct']:.1f} % in the "
                f"steady phase (RFC 9411 allows {RFC9411_MAX_RATE_DEVIATION_PCT:g} %)",
            )
        )
    if cpu_warned or kpis.get("generator_cpu_pct", 0.0) > SATURATED_PCT:
        found.append(
            ("generator_saturated", "load generator saturated: this measures the generator, not the appliance")
        )
    if kpis.get("target_cpu_pct", 0.0) > SATURATED_PCT * params.target_workers:
        found.append(
            (
                "target_saturated",
                f"the built-in HTTP target used {kpis['target_cpu_pct']:.0f} % CPU over "
                f"{params.target_workers} worker(s): raise params.target_workers",
            )
        )
    return found


def summarize(params: HttpParams, samples: list[Sample]) -> dict[str, float]:
    summary = {
        key: sum(s["values"][key] for s in samples) / len(samples)
        for key in ("rps", "throughput_gbps", "generator_cpu_pct")
        if all(key in s["values"] for s in samples)
    }
    return summary | histogram_kpis(histogram.merge(s.get("histogram", {}) for s in samples))


def offered_load(params: HttpParams) -> OfferedLoad:
    """Requests per second this agent's users are paced to; unpaced (or a locustfile's own pacing), as many as
    they can."""
    return {"rps": params.rps}
