"""The InfluxDB sink: points written as they are measured, and never lost silently.

Writes go through influxdb-client's synchronous write API (InfluxDB 2.x, 3.x, Cloud, 1.8+ through its v2
compatibility API, and VictoriaMetrics), or, for InfluxDB 1.x before 1.8 (no /api/v2/write), as the same
line protocol POSTed to /write with `precision=u` (v1 spells microseconds `u`, v2 `us`). The kind is read
from /ping's X-Influxdb-Version header unless forced.

When the server is down or answers 429/5xx, points go to a bounded on-disk spool and are replayed in order
once it answers again; new points queue behind the spool. A permanent rejection (400: bad line, field type
conflict) is narrowed down to the offending lines by bisection, which are logged and counted, never retried.
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agent.safety import own_regular_file, private_dir
from agent.settings import InfluxConfig
from agent.urls import redact, without_credentials
from agent.wire import SinkStats

if TYPE_CHECKING:
    from influxdb_client import InfluxDBClient

log = logging.getLogger("vtax.sink")

FLUSH_S = 0.5  # a point waits at most this long in memory: well inside the 2 s promise
BATCH_LINES = 5000
SEGMENT_BYTES = 4 * 1024 * 1024
FAILING_GRACE_S = 3.0  # how long a final flush waits for a server that keeps failing


class TransientError(Exception):
    """The server did not take the points now; they will be retried from the spool."""


class Rejected(Exception):
    """The server refused the points for good (400)."""


def _tls(config: InfluxConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def detect_kind(config: InfluxConfig) -> Literal["v1", "v2"]:
    """v1 for InfluxDB 1.x before 1.8 (no /api/v2/write), v2 for everything else."""
    if config.kind != "auto":
        return config.kind
    try:
        url = without_credentials(config.url).rstrip("/")
        with urllib.request.urlopen(f"{url}/ping", timeout=5, context=_tls(config)) as reply:
            version = reply.headers.get("X-Influxdb-Version", "")
    except (OSError, urllib.error.URLError) as exc:
        raise TransientError(f"/ping failed: {exc}") from None
    parts = version.lstrip("v").split(".")
    if len(parts) >= 2 and parts[0] == "1" and parts[1].isdigit() and int(parts[1]) < 8:
        return "v1"
    return "v2"


def probe(config: InfluxConfig, timeout: float = 3.0) -> str | None:
    """Why the server does not answer at all, or None when it does (any HTTP answer counts: it is there)."""
    try:
        url = without_credentials(config.url).rstrip("/")
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout, context=_tls(config)):
            return None
    except urllib.error.HTTPError:
        return None
    except (OSError, urllib.error.URLError) as exc:
        return redact(str(getattr(exc, "reason", exc)))


class Writer:
    """One write request of line protocol, in the server's dialect."""

    def __init__(self, config: InfluxConfig) -> None:
        # imported here: influxdb_client costs 0.4 s to import, and only a process that writes needs it
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.config = config
        self.kind = detect_kind(config)
        self._client: InfluxDBClient | None = None
        if self.kind == "v2":
            token = config.token.get_secret_value() if config.token else ""
            if not token and config.username:  # InfluxDB 1.8+ compatibility API: user:password as the token
                password = config.password.get_secret_value() if config.password else ""
                token = f"{config.username}:{password}"
            self._client = InfluxDBClient(url=config.url, token=token, org=config.org, verify_ssl=config.verify_tls)
            self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        from influxdb_client import WritePrecision
        from influxdb_client.client.exceptions import InfluxDBError

        body = "\n".join(lines)
        if self._client is not None:
            try:
                self._api.write(
                    bucket=self.config.bucket, org=self.config.org, record=body, write_precision=WritePrecision.US
                )
            except InfluxDBError as exc:
                status = exc.response.status if exc.response is not None else 0
                raise (Rejected if status == 400 else TransientError)(f"{status}: {exc.message}") from None
            except Exception as exc:  # urllib3 connection errors and timeouts
                raise TransientError(str(exc)) from None
            return
        self._write_v1(body)

    def _write_v1(self, body: str) -> None:
        query = {"db": self.config.database, "precision": "u"}
        if self.config.retention_policy:
            query["rp"] = self.config.retention_policy
        request = urllib.request.Request(
            f"{self.config.url.rstrip('/')}/write?{urllib.parse.urlencode(query)}", data=body.encode(), method="POST"
        )
        if self.config.username:
            password = self.config.password.get_secret_value() if self.config.password else ""
            secret = base64.b64encode(f"{self.config.username}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {secret}")
        try:
            with urllib.request.urlopen(request, timeout=10, context=_tls(self.config)):
                return
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise (Rejected if exc.code == 400 else TransientError)(f"{exc.code}: {detail}") from None
        except OSError as exc:
            raise TransientError(str(exc)) from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class Spool:
    """Segment files of line protocol, oldest first; a segment is deleted once all of it is written."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = private_dir(directory)
        self.max_bytes = max_bytes
        self.dropped = 0

    def segments(self) -> list[Path]:
        """The segments this agent wrote, oldest first; anything else found here (a symlink, another user's
        file) is never replayed with the run's credentials."""
        found = sorted(self.directory.glob("*.lp"))
        foreign = [p for p in found if not own_regular_file(p)]
        for path in foreign:
            log.error("spool: %s is not a file this agent wrote; ignored", path)
        return [p for p in found if p not in foreign]

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.segments())

    def append(self, lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode()
        if self.size() + len(data) > self.max_bytes:
            self.dropped += len(lines)
            log.error("spool full (%d bytes): %d points dropped", self.max_bytes, len(lines))
            return
        segments = self.segments()
        last = segments[-1] if segments and segments[-1].stat().st_size < SEGMENT_BYTES else None
        if last is None:
            last = self.directory / f"{time.time_ns():020d}.lp"
        descriptor = os.open(last, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "ab") as out:
            out.write(data)


class InfluxSink:
    """Takes line protocol from any thread; a background thread writes it, spooling what cannot be written."""

    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        self.spool = Spool(config.spool_dir, int(config.spool_max_mb * 1024 * 1024))
        self.sent = 0
        self.rejected = 0
        self.last_error = ""
        self._queue: list[str] = []
        self._lock = threading.Lock()
        self._writer: Writer | None = None
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._failing = False  # the last write attempt failed: the server is down or refusing
        self._thread = threading.Thread(target=self._loop, name="influx-sink", daemon=True)
        self._thread.start()

    def submit(self, lines: list[str]) -> None:
        with self._lock:
            self._queue.extend(lines)
            self._idle.clear()

    def stats(self) -> SinkStats:
        """For heartbeats and logs: no secrets."""
        return {
            "sent": self.sent,
            "rejected": self.rejected,
            "spooled_bytes": self.spool.size(),
            "spool_dropped": self.spool.dropped,
            "last_error": self.last_error,
        }

    def pending(self) -> int:
        """Points waiting in memory (the spool's are on disk already)."""
        with self._lock:
            return len(self._queue)

    def flush(self, timeout: float, *, give_up_failing_after: float = FAILING_GRACE_S) -> bool:
        """Wait until nothing is queued or spooled; False if the server did not take it all in time. A server
        that keeps failing is given `give_up_failing_after` seconds, not the whole timeout: what it does not take
        waits in the spool."""
        started = time.monotonic()
        while (waited := time.monotonic() - started) < timeout:
            with self._lock:
                empty = not self._queue
            if empty and not self.spool.segments():
                return True
            if self._failing and waited >= give_up_failing_after:
                return False
            time.sleep(0.1)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Flush what can be flushed; the rest stays in the spool for the next start."""
        self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout)
        with self._lock:
            leftover, self._queue = self._queue, []
        if leftover:
            self.spool.append(leftover)
        if self._writer is not None:
            self._writer.close()

    def _loop(self) -> None:
        backoff = FLUSH_S
        while not self._stop.wait(backoff):
            try:
                self._drain()
                backoff, self._failing = FLUSH_S, False
            except Exception as exc:  # TransientError, or anything unforeseen: the writer thread never dies
                if not isinstance(exc, TransientError):
                    log.exception("InfluxDB sink: unexpected error; points are kept in the spool")
                self.last_error, self._failing = redact(str(exc)), True
                with self._lock:
                    pending, self._queue = self._queue, []
                if pending:
                    self.spool.append(pending)
                backoff = min(backoff * 2, 5.0)

    def _drain(self) -> None:
        if self._writer is None:
            self._writer = Writer(self.config)
        for segment in self.spool.segments():  # the spool first: order is kept
            lines = [line for line in segment.read_text().splitlines() if line]
            for start in range(0, len(lines), BATCH_LINES):
                self._send(lines[start : start + BATCH_LINES])
            segment.unlink()
        while True:
            with self._lock:
                batch, self._queue = self._queue[:BATCH_LINES], self._queue[BATCH_LINES:]
            if not batch:
                return
            try:
                self._send(batch)
            except TransientError:
                with self._lock:
                    self._queue[:0] = batch
                raise

    def _send(self, lines: list[str]) -> None:
        """Write lines; on a 400, find and drop the offending ones by bisection, keeping the rest."""
        assert self._writer is not None
        try:
            self._writer.write(lines)
            self.sent += len(lines)
        except Rejected as exc:
            if len(lines) == 1:
                self.rejected += 1
                log.error("InfluxDB rejected a point for good (not retried): %s | %s", redact(str(exc)), lines[0][:500])
                return
            middle = len(lines) // 2
            self._send(lines[:middle])
            self._send(lines[middle:])
