"""iperf3 network load, run through the iperf3 program with JSON output.

The program, not an in-process binding: a crash or exit() inside libiperf must never take an agent down.
The server side is started by vtax on a free port as a one-off (`-1`) server under coreutils `timeout`,
so it ends by itself at the trial deadline even if the agent that started it is gone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Literal

import psutil
from pydantic import Field, model_validator

from workloads.base import (
    Cancelled,
    DeadlineExceeded,
    MetricInfo,
    OfferedLoad,
    RunContext,
    Sample,
    ScaledOutParams,
    Target,
    WorkloadError,
    combine,
    mean_of,
    parse_host_port,
)
from workloads.serving import start_server

KIND = "iperf3"
HAS_SERVER = True
READY_S = 0.2  # iperf3 starts in milliseconds

METRICS: dict[str, MetricInfo] = {
    "throughput_gbps": MetricInfo(
        unit="Gbit/s",
        across_agents="sum",
        better="higher",
        description="goodput, all streams (UDP: the rate sent; see loss_pct)",
    ),
    "retransmits": MetricInfo(
        unit="1/s", across_agents="sum", better="lower", description="TCP retransmits (sender side)"
    ),
    "rtt_ms": MetricInfo(unit="ms", across_agents="mean", better="lower", description="TCP smoothed RTT"),
    "cwnd_kb": MetricInfo(unit="KiB", across_agents="mean", better="higher", description="TCP send window"),
    "jitter_ms": MetricInfo(unit="ms", across_agents="mean", better="lower", description="UDP jitter"),
    "loss_pct": MetricInfo(unit="%", across_agents="mean", better="lower", description="UDP datagram loss"),
}

_RATE = re.compile(r"^\d+(\.\d+)?[KMGkmg]?$")
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}  # iperf3's -b suffixes are decimal
UDP_DEFAULT_BPS = 1e6  # what iperf3 sends per UDP stream without -b
_POLL_S = 0.25  # how often a running client checks for its deadline and for cancel


MAX_TEST_S = 86_400  # iperf3 3.12 refuses a longer -t


class Iperf3Params(ScaledOutParams):
    """Parameters of one iperf3 client; the server side needs none of its own."""

    protocol: Literal["tcp", "udp"] = "tcp"
    streams: int = Field(1, ge=1, le=128, description="parallel streams (-P)")
    reverse: bool = Field(False, description="server sends, client receives (-R)")
    bidir: bool = Field(False, description="both directions at once (--bidir, iperf3 >= 3.7)")
    bitrate: str | None = Field(None, description="target bitrate per stream, e.g. 500M (-b)")
    window: str | None = Field(None, description="socket buffer size, e.g. 4M (-w); UDP needs it")
    length: str | None = Field(None, description="read/write buffer or datagram size, e.g. 128K (-l)")
    omit: int = Field(0, ge=0, le=60, description="seconds iperf3 itself omits at its start (-O)")
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="client processes, each against a server of its own on consecutive ports, summed per second "
        "(iperf3 3.12 is single-threaded: one process is the limit near 19 Gbit/s here)",
    )
    affinity: int | list[int] | None = Field(
        None,
        description="CPU to pin the client and, for its test, the server to (-A N,N); a list: process i on the "
        "i-th CPU, round robin",
    )
    target: str | None = Field(None, description="an existing iperf3 server host:port; then no server agent is used")
    chunk: int = Field(
        MAX_TEST_S,
        ge=1,
        le=MAX_TEST_S,
        description="longest single iperf3 test, seconds (iperf3 3.12 refuses -t over 86,400): longer load runs "
        "as consecutive tests, each started as the last ends",
    )

    @model_validator(mode="after")
    def _check(self) -> Iperf3Params:
        if self.reverse and self.bidir:
            raise ValueError("reverse and bidir exclude each other")
        for name in ("bitrate", "window", "length"):
            value = getattr(self, name)
            if value is not None and not _RATE.match(value):
                raise ValueError(f"{name} must be a number with an optional K/M/G suffix, got {value!r}")
        if self.target is not None and parse_host_port(self.target)["port"] + self.processes - 1 > 65535:
            raise ValueError(f"target: {self.processes} processes need {self.processes} consecutive ports")
        return self


Params = Iperf3Params  # the name the WorkloadKind protocol looks up


_TCP_SENDER_METRICS = ("retransmits", "rtt_ms", "cwnd_kb")  # iperf3 reports them of the sending side


def unavailable_metrics(params: Iperf3Params) -> dict[str, str]:
    """The metrics these parameters can never report, each with why (an SLA on one could never be met)."""
    if params.protocol == "tcp":
        missing = dict.fromkeys(("jitter_ms", "loss_pct"), "UDP only")
        if params.reverse:
            missing |= dict.fromkeys(_TCP_SENDER_METRICS, "with reverse the TCP sender is the server, not measured")
        return missing
    return dict.fromkeys(_TCP_SENDER_METRICS, "TCP only")


def external_target(params: Iperf3Params) -> Target | None:
    """The server the user named, if any."""
    return parse_host_port(params.target) if params.target else None


@functools.cache
def _program() -> str:
    path = shutil.which("iperf3")
    if path is None:
        raise WorkloadError("iperf3 is not installed on this agent (Debian/Ubuntu: apt-get install iperf3)")
    return path


@functools.cache
def _supports_bidir() -> bool:
    out = subprocess.run([_program(), "--help"], capture_output=True, text=True, check=False)
    return "--bidir" in out.stdout + out.stderr


def version() -> str | None:
    """The installed iperf3's version, or None when it is absent."""
    try:
        out = subprocess.run([_program(), "--version"], capture_output=True, text=True, check=False)
    except WorkloadError:
        return None
    match = re.search(r"iperf (\S+)", out.stdout)
    return match.group(1) if match else None


def serve(params: Iperf3Params, *, bind: str, deadline: float) -> Target:
    """Start iperf3 servers, one per client process, on consecutive free ports (the target names the first);
    `timeout` kills them at the deadline. Each serves one test (`-1`), or, where the load lasts longer than
    one test may (`chunk`), every test until the deadline."""
    one_off = ["-1"] if deadline - time.time() <= params.chunk else []
    return start_server(
        lambda port: [_program(), "-s", *one_off, "-J", "-B", bind, "-p", str(port)],
        bind=bind,
        deadline=deadline,
        what="iperf3 server",
        count=params.processes,
    )


def _command(params: Iperf3Params, target: Target, seconds: int, process: int = 0) -> list[str]:
    port = target["port"] + process
    cmd = [_program(), "-c", target["host"], "-p", str(port), "-J", "--get-server-output"]
    cmd += ["-t", str(seconds), "-i", "1", "-P", str(params.streams), "--connect-timeout", "5000"]
    if params.protocol == "udp":
        cmd.append("-u")
    if params.reverse:
        cmd.append("-R")
    if params.bidir:
        if not _supports_bidir():
            raise WorkloadError("this agent's iperf3 has no --bidir (needs iperf3 >= 3.7)")
        cmd.append("--bidir")
    for flag, value in (("-b", params.bitrate), ("-w", params.window), ("-l", params.length)):
        if value is not None:
            cmd += [flag, value]
    if params.omit:
        cmd += ["-O", str(params.omit)]
    if (cpu := params.cpu(process)) is not None:
        cmd += ["-A", f"{cpu},{cpu}"]
    return cmd


def chunks(duration: float, chunk: int) -> list[int]:
    """The whole-second tests a load of `duration` runs as, none longer than `chunk` (rounded up, so the load
    runs through the whole trial: 2.5 s rounded down left half a second of the steady phase without load)."""
    total = max(1, math.ceil(duration))
    return [chunk] * (total // chunk) + ([total % chunk] if total % chunk else [])


def run(params: Iperf3Params, ctx: RunContext) -> Iterator[Sample]:
    """Run the client processes for the trial's duration and yield one sample per second over all of them;
    a load longer than `chunk` runs as consecutive tests, each yielded as it ends."""
    if ctx.target is None:
        raise WorkloadError("iperf3 client has no target server")
    for n, seconds in enumerate(chunks(ctx.duration, params.chunk)):
        # started before the common start, held by a shell that execs iperf3 once released: no process start-up
        # in the load's first second
        procs = [
            subprocess.Popen(
                ["sh", "-c", 'read -r _ && exec "$@"', "sh", *_command(params, ctx.target, seconds, process)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for process in range(params.processes)
        ]
        if n == 0:
            ctx.wait_for_start()
        launched = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()  # communicate() closes it
        outputs = _wait_reporting_progress(procs, ctx)
        reports = [_report(proc, out, err) for proc, (out, err) in zip(procs, outputs, strict=True)]
        yield from merge([list(parse_report(report, launched)) for report in reports])


def _report(proc: subprocess.Popen[bytes], out: bytes, err: bytes) -> dict:
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        detail = (err or out).decode(errors="replace").strip()[-300:]
        raise WorkloadError(f"iperf3 exited {proc.returncode} without a JSON report: {detail}") from None
    if "error" in report:
        raise WorkloadError(f"iperf3: {report['error']}")
    return report


def merge(per_process: list[list[Sample]]) -> Iterator[Sample]:
    """The client processes' seconds as one: each metric summed or averaged as it would be across agents
    (throughput summed, RTT and loss averaged). Only the seconds every process measured count: a second one
    process missed would otherwise show as a drop in the sum."""
    for seconds in zip(*per_process, strict=False):  # strict=False: a process may report a second fewer
        keys = set.intersection(*(set(second["values"]) for second in seconds))
        values = {key: combine(METRICS.get(key), [second["values"][key] for second in seconds]) for key in keys}
        yield Sample(t=seconds[0]["t"], dt=seconds[0]["dt"], values=values)


def _wait_reporting_progress(procs: list[subprocess.Popen[bytes]], ctx: RunContext) -> list[tuple[bytes, bytes]]:
    """Wait for the clients; kill them at the deadline or on cancel; meanwhile report their live rate.

    iperf3 before 3.17 prints its JSON only at the end, so the live rate comes from the bytes the
    client processes read and write (/proc/PID/io); the JSON intervals remain the record.
    """
    handles = [psutil.Process(proc.pid) for proc in procs]
    before, t_before = _io_total(handles), time.time()
    done: dict[int, tuple[bytes, bytes]] = {}
    while True:
        for i, proc in enumerate(procs):
            if i not in done:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    done[i] = proc.communicate(timeout=_POLL_S / len(procs))
        if len(done) == len(procs):
            return [done[i] for i in range(len(procs))]
        try:
            ctx.check_stop()
        except (DeadlineExceeded, Cancelled) as exc:
            for i, proc in enumerate(procs):
                if i not in done:
                    proc.kill()
                    proc.communicate()
            target = ctx.target or {"host": "?", "port": 0}
            raise type(exc)(f"iperf3 client to {target['host']}:{target['port']} {exc}") from None
        t_now = time.time()
        if t_now - t_before >= 1.0:
            now = _io_total(handles)
            if now is not None and before is not None:
                ctx.progress({"throughput_gbps": (now - before) * 8 / 1e9 / (t_now - t_before)})
            before, t_before = now, t_now


def _io_total(handles: list[psutil.Process]) -> int | None:
    counts = [_io_bytes(handle) for handle in handles]
    return None if None in counts else sum(c for c in counts if c is not None)


def _io_bytes(handle: psutil.Process) -> int | None:
    try:
        io = handle.io_counters()
    except (psutil.Error, AttributeError):
        return None
    return int(io.read_chars + io.write_chars)


def parse_report(report: dict, launched: float) -> Iterator[Sample]:
    """Samples from an iperf3 client JSON report; UDP loss/jitter come from the receiving side."""
    server = report.get("server_output_json") or {}
    received_by_server = server.get("intervals", [])
    for i, interval in enumerate(report.get("intervals", [])):
        total = interval["sum"]
        if total.get("omitted"):
            continue
        sums = [total] + ([interval["sum_bidir_reverse"]] if "sum_bidir_reverse" in interval else [])
        values: dict[str, float] = {"throughput_gbps": sum(s["bits_per_second"] for s in sums) / 1e9}
        senders = [s for s in interval["streams"] if s.get("sender") and "rtt" in s]
        if senders:
            values["retransmits"] = float(sum(s.get("retransmits", 0) for s in senders))
            values["rtt_ms"] = sum(s["rtt"] for s in senders) / len(senders) / 1000
            values["cwnd_kb"] = sum(s["snd_cwnd"] for s in senders) / len(senders) / 1024
        receiver = total if "jitter_ms" in total else None
        if receiver is None and i < len(received_by_server):
            server_sum = received_by_server[i]["sum"]
            receiver = server_sum if "jitter_ms" in server_sum else None
        if receiver is not None:
            values["jitter_ms"] = float(receiver["jitter_ms"])
            packets = receiver.get("packets") or 0
            values["loss_pct"] = 100.0 * receiver.get("lost_packets", 0) / packets if packets else 0.0
        yield Sample(t=launched + float(total["start"]), dt=float(total["seconds"]), values=values)


def summarize(params: Iperf3Params, samples: list[Sample]) -> dict[str, float]:
    """Mean of every per-second value, and the total retransmits."""
    summary = {key: mean for key in METRICS if (mean := mean_of(samples, key)) is not None}
    if "retransmits" in summary:
        summary["retransmits_total"] = sum(s["values"].get("retransmits", 0.0) for s in samples)
    return summary


def offered_load(params: Iperf3Params) -> OfferedLoad:
    """Bits per second all streams of all processes send (both ways with bidir); TCP without a bitrate sends as
    much as it can."""
    if params.bitrate is None and params.protocol == "tcp":
        return {"gbps": None}
    per_stream = UDP_DEFAULT_BPS
    if params.bitrate is not None:
        number, suffix = params.bitrate.rstrip("KMGkmg"), params.bitrate.lstrip("0123456789.").lower()
        per_stream = float(number) * _SUFFIX[suffix]
    return {"gbps": per_stream * params.streams * params.processes * (2 if params.bidir else 1) / 1e9}
