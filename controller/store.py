"""The run store: one SQLite file holding runs, trials, agent results, samples and host counters.

It is the source of truth for analysis: `vtax show` recomputes a run's summary from here alone.

A store that cannot be written (another process holds it past the busy timeout, a full disk, a file system made
read-only) loses nothing: every write from then on goes, in order, to a side file (`SideFile`) that
`vtax import` adds to a store once one can be written, and the run loop stops at the end of the trial.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypedDict

import psutil

from agent.urls import redact
from agent.wire import AgentResult, HostSample, TrialRecord
from controller import sampleblocks
from controller.errors import InfrastructureError, InputError
from controller.hooks import HookRun
from workloads.base import Sample
from workloads.histogram import Histogram

DEFAULT_PATH = "vtax.db"
BUSY_TIMEOUT_S = 60.0  # how long a write waits for another process that holds the store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, engine TEXT NOT NULL, spec_path TEXT, spec_json TEXT NOT NULL,
    created REAL NOT NULL, finished REAL, status TEXT NOT NULL, reason TEXT
);
CREATE TABLE IF NOT EXISTS trials (
    run_id TEXT NOT NULL REFERENCES runs(id), idx INTEGER NOT NULL, condition TEXT NOT NULL,
    repetition INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT, start_at REAL, deadline REAL, ended REAL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS agent_results (
    run_id TEXT NOT NULL, trial_idx INTEGER NOT NULL, agent TEXT NOT NULL, workload TEXT NOT NULL,
    status TEXT NOT NULL, reason TEXT, started_at REAL, ended_at REAL, agent_cpu_s REAL, summary_json TEXT,
    start_skew_s REAL, host TEXT
);
CREATE TABLE IF NOT EXISTS agent_clocks (
    run_id TEXT NOT NULL, agent TEXT NOT NULL, offset_s REAL NOT NULL, uncertainty_s REAL NOT NULL,
    rtt_s REAL NOT NULL, PRIMARY KEY (run_id, agent)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL, trial_idx INTEGER NOT NULL, agent TEXT NOT NULL, workload TEXT NOT NULL,
    t REAL NOT NULL, dt REAL NOT NULL, values_json TEXT NOT NULL, histogram_json TEXT
);
CREATE TABLE IF NOT EXISTS sample_blocks (
    run_id TEXT NOT NULL, trial_idx INTEGER NOT NULL, agent TEXT NOT NULL, workload TEXT NOT NULL,
    fields_json TEXT NOT NULL, count INTEGER NOT NULL, values_blob BLOB NOT NULL, histograms_blob BLOB
);
CREATE TABLE IF NOT EXISTS trial_facts (
    run_id TEXT NOT NULL, trial_idx INTEGER NOT NULL, facts_json TEXT NOT NULL, PRIMARY KEY (run_id, trial_idx)
);
CREATE TABLE IF NOT EXISTS host_counters (
    run_id TEXT NOT NULL, trial_idx INTEGER NOT NULL, host TEXT NOT NULL, t REAL NOT NULL, dt REAL NOT NULL,
    values_json TEXT NOT NULL, detail_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vsphere_counters (
    run_id TEXT NOT NULL, trial_idx INTEGER NOT NULL, role TEXT NOT NULL, entity TEXT NOT NULL, moid TEXT NOT NULL,
    host TEXT, counter TEXT NOT NULL, instance TEXT NOT NULL, t REAL NOT NULL, dt REAL NOT NULL, raw REAL NOT NULL,
    value REAL NOT NULL, unit TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trial_flags (
    run_id TEXT NOT NULL, trial_idx INTEGER NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hook_runs (
    run_id TEXT NOT NULL, trial_idx INTEGER NOT NULL, stage TEXT NOT NULL, command TEXT NOT NULL, exit_code INTEGER,
    output TEXT NOT NULL, seconds REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run_notes (
    run_id TEXT NOT NULL, key TEXT NOT NULL, value_json TEXT NOT NULL, PRIMARY KEY (run_id, key)
);
CREATE INDEX IF NOT EXISTS samples_by_run ON samples (run_id, trial_idx);
CREATE INDEX IF NOT EXISTS blocks_by_run ON sample_blocks (run_id, trial_idx);
CREATE INDEX IF NOT EXISTS vsphere_by_run ON vsphere_counters (run_id, trial_idx);
CREATE INDEX IF NOT EXISTS host_by_run ON host_counters (run_id, trial_idx);
"""


_ADDED_COLUMNS = [
    ("agent_results", "start_skew_s", "REAL"),
    ("samples", "histogram_json", "TEXT"),
    ("agent_results", "host", "TEXT"),
    ("runs", "controller_host", "TEXT"),
    ("runs", "controller_pid", "INTEGER"),
    ("runs", "controller_started", "REAL"),
    ("agent_results", "agent_rss_mb", "REAL"),
    ("agent_results", "received_at", "REAL"),
]  # (table, column, type), oldest first


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch a store to write-ahead logging, waiting out another process doing the same.

    SQLite answers a concurrent journal-mode switch on a new file with "database is locked" at once, without its
    busy handler, so the wait is done here."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class RunIdTaken(Exception):
    """A run with this id is in the store already (two runs started in the same second drew the same suffix)."""


class StoreFailed(InfrastructureError):
    """The store could not be written; what was measured is in its side file."""


P = ParamSpec("P")


class SideFile:
    """Where a store's writes go once the store cannot take them: one JSON line per write (its method and
    arguments), next to the store or, where that cannot be written either, in a private temporary file."""

    def __init__(self, store_path: str) -> None:
        self._store_path = store_path
        self.path: str | None = None
        self.error: str | None = None  # why not even the side file could be written

    def keep(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        line = json.dumps({"op": op, "args": args, "kwargs": kwargs}) + "\n"
        try:
            if self.path is None:
                self.path = self._start(line)
            else:
                _append(self.path, line)
        except OSError as exc:
            self.error = str(exc)

    def _start(self, line: str) -> str:
        """A new file of our own (never one someone planted), with its first line written: beside the store,
        else (that disk is full or read-only too) in the temporary directory."""
        beside = f"{self._store_path}.unsaved-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
        try:
            os.close(os.open(beside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            _append(beside, line)
            return beside
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(beside)
        descriptor, path = tempfile.mkstemp(prefix="vtax-unsaved-", suffix=".jsonl")
        os.close(descriptor)
        _append(path, line)
        return path


def _on_read_only_fs(path: str) -> bool:
    try:
        return bool(os.statvfs(Path(path).resolve().parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(line)
        out.flush()
        os.fsync(out.fileno())


class StoredSample(Sample):
    """A workload sample as the store gives it back: which trial, agent and workload it belongs to."""

    trial_idx: int
    agent: str
    workload: str


class StoredHostSample(HostSample):
    trial_idx: int


class StoredResult(TypedDict):
    run_id: str
    trial_idx: int
    agent: str
    workload: str
    status: str
    reason: str
    started_at: float | None
    ended_at: float | None
    agent_cpu_s: float | None
    summary: dict[str, float]
    start_skew_s: float | None
    host: str | None
    agent_rss_mb: float | None
    received_at: float | None


# a trial's facts (controller.facts computes them): what the analysis needs of its raw seconds


class Aggregate(TypedDict):
    """One field of one agent's workload over the steady phase: its mean weighted by sample length, min, max."""

    mean: float
    min: float
    max: float


class SourceFacts(TypedDict):
    """One agent's workload in one trial."""

    agent: str
    workload: str
    covered_s: float  # seconds of the steady phase its samples cover (overlaps once)
    cpu_warning: bool  # a steady sample said its generator ran out of CPU
    fields: dict[str, Aggregate]


class HostFacts(TypedDict):
    coarsest_s: float  # the longest host sample (vCenter's are 20 s)
    steady_s: dict[str, float]  # per hypervisor agent: seconds of host counters in the steady phase
    appliance: dict[str, bool]  # per hypervisor agent that looked for the appliance: whether it found it


class TrialFacts(TypedDict):
    kpis: dict[str, float]
    sources: list[SourceFacts]
    histograms: dict[str, Histogram]  # per workload label: its agents' steady samples merged
    host: HostFacts


class Flag(TypedDict):
    """Something about a trial the analysis must know: a VM migrated, counters missing."""

    trial_idx: int
    kind: str
    severity: Literal["error", "warning"]
    message: str


class ClockRow(TypedDict):
    agent: str
    offset_s: float
    uncertainty_s: float
    rtt_s: float


class RunRow(TypedDict):
    id: str
    name: str
    engine: str
    spec_path: str | None
    spec: dict[str, Any]  # the validated spec as JSON, re-validated by whoever reads it
    created: float
    finished: float | None
    status: str
    reason: str | None


_RUN_TABLES = (
    "trials",
    "agent_results",
    "agent_clocks",
    "samples",
    "sample_blocks",
    "trial_facts",
    "host_counters",
    "vsphere_counters",
    "trial_flags",
    "hook_runs",
    "run_notes",
)
_TRIAL_COLUMNS = ("idx", "condition", "repetition", "status", "reason", "start_at", "deadline", "ended")


def _as_found(row: dict[str, Any]) -> dict[str, Any]:
    """A run row as it is now: one still marked running whose controller, on this machine, is gone (killed, the
    machine rebooted) is shown as interrupted. Where the controller ran elsewhere, this cannot be told."""
    if row["status"] != "running" or row.get("controller_host") != socket.gethostname() or not row["controller_pid"]:
        return row
    try:
        alive = abs(psutil.Process(row["controller_pid"]).create_time() - (row["controller_started"] or 0)) < 1.0
    except psutil.Error:
        alive = False
    if alive:
        return row
    return {**row, "status": "interrupted", "reason": f"its controller (pid {row['controller_pid']}) is gone"}


def _kept(method: Callable[P, None]) -> Callable[P, None]:
    """A write of what a run measured: when the store cannot take it, it goes to the side file instead, and so
    does every later write of this Store object, in order (`Store.failure` says why)."""

    @functools.wraps(method)
    def write(*args: P.args, **kwargs: P.kwargs) -> None:
        store: Store = args[0]  # type: ignore[assignment]
        if store.failure is None:
            try:
                method(*args, **kwargs)
                return
            except sqlite3.Error as exc:
                store.failure = f"{store.path}: the run store cannot be written: {exc}"
        store.side.keep(method.__name__, args[1:], kwargs)

    _KEPT.add(method.__name__)
    return write


_KEPT: set[str] = set()  # the writes a side file may hold, and so the only ones `Store.replay` calls


class Store:
    """Writes commit immediately: a crash mid-run keeps every trial already measured. Threads may share a
    store (vCenter's counters are stored by a background reader while the next trial runs). Several processes
    may too: write-ahead logging, and a write waits up to BUSY_TIMEOUT_S for another that holds the store."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        """Opens the store at `path`; without `create`, one that does not exist is an input error (a command that
        only reads must not leave an empty store behind)."""
        self.path = str(path)
        if not create and not Path(path).exists():
            raise InputError(f"{self.path}: no run store here (give --store or VTAX_STORE)")
        self._lock = threading.RLock()
        self.failure: str | None = None  # why the store stopped taking writes (they go to `side`)
        self.side = SideFile(self.path)
        read_only = _on_read_only_fs(self.path)
        try:
            if read_only and not create:  # an archived store on read-only media is still read
                uri = f"file:{Path(self.path).resolve()}?immutable=1"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
                _enable_wal(self._db)
                self._db.executescript(_SCHEMA)
                self._upgrade()
        except sqlite3.Error as exc:
            hint = " (its file system is read-only)" if read_only else ""
            raise StoreFailed(f"{self.path}: cannot open the run store: {exc}{hint}") from None
        self._db.row_factory = sqlite3.Row

    def kept_note(self) -> str:
        """Where what could not be stored is, and how to add it, for an error message."""
        if self.side.error is not None:
            return f"and it could not be kept elsewhere either ({self.side.error})"
        if self.side.path is None:
            return "nothing was lost"
        return f"what was measured is kept in {self.side.path}: `vtax import {self.side.path} --store {self.path}`"

    def _upgrade(self) -> None:
        """Add the columns later versions introduced to a store an older vtax made.

        Checked and altered under one write lock (BEGIN IMMEDIATE): two processes opening a new store at once
        would otherwise both see a column missing and the second would fail adding it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for table, column, kind in _ADDED_COLUMNS:
                    present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                    if column not in present:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            except sqlite3.Error:
                self._db.rollback()
                raise
            self._db.commit()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One thread's writes at a time, committed together."""
        with self._lock, self._db:
            yield

    def close(self) -> None:
        self._db.close()

    @_kept
    def create_run(self, *, run_id: str, name: str, engine: str, spec_path: str | None, spec: dict[str, Any]) -> None:
        """A new run, marked running by this process (so that a run whose controller is gone shows as such);
        RunIdTaken if the id is in use."""
        me = psutil.Process()
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO runs (id, name, engine, spec_path, spec_json, created, status, controller_host,"
                    " controller_pid, controller_started) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        run_id,
                        name,
                        engine,
                        spec_path,
                        json.dumps(spec),
                        time.time(),
                        "running",
                        socket.gethostname(),
                        me.pid,
                        me.create_time(),
                    ),
                )
        except sqlite3.IntegrityError:
            raise RunIdTaken(run_id) from None

    def reopen_run(self, run_id: str) -> None:
        """A stopped run taken up again (a soak resumed), marked running by this process; InputError if its
        controller still runs or it completed."""
        row = self.run(run_id)
        if row["status"] == "running":
            raise InputError(f"run {run_id} is still running: its controller is alive")
        if row["status"] == "completed":
            raise InputError(f"run {run_id} completed: there is nothing to resume")
        me = psutil.Process()
        with self._transaction():
            self._db.execute(
                "UPDATE runs SET status = 'running', reason = NULL, finished = NULL, controller_host = ?,"
                " controller_pid = ?, controller_started = ? WHERE id = ?",
                (socket.gethostname(), me.pid, me.create_time(), run_id),
            )

    def replay(self, path: str | Path) -> list[str]:
        """Add a side file's writes to this store, in order; returns the runs they belong to. Only the writes a
        side file may hold are carried out: the file names a method, never code."""
        runs: list[str] = []
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read: {exc}") from None
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                op, args, kwargs = entry["op"], entry["args"], entry["kwargs"]
                if op not in _KEPT or not isinstance(args, list) or not isinstance(kwargs, dict):
                    raise ValueError(f"not a store write: {str(op)[:40]!r}")
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{path}:{number}: not a vtax side file line ({exc})") from None
            run_id = kwargs.get("run_id") or (args[0] if args else None)
            if op == "create_run":
                with contextlib.suppress(RunIdTaken):
                    getattr(self, op)(*args, **kwargs)
            else:
                getattr(self, op)(*args, **kwargs)
            if self.failure is not None:
                raise StoreFailed(self.failure)
            if isinstance(run_id, str) and run_id not in runs:
                runs.append(run_id)
        return runs

    @_kept
    def finish_run(self, run_id: str, status: str, reason: str = "") -> None:
        """The run's end; a reason that quotes a URL is kept without its password."""
        with self._transaction():
            self._db.execute(
                "UPDATE runs SET status = ?, reason = ?, finished = ? WHERE id = ?",
                (status, redact(reason), time.time(), run_id),
            )

    @_kept
    def add_trial(self, run_id: str, trial: TrialRecord) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO trials (run_id, idx, condition, repetition, status, reason, start_at,"
                " deadline, ended) VALUES (:run_id, :idx, :condition, :repetition, :status, :reason, :start_at,"
                " :deadline, :ended)",
                {"run_id": run_id, **{k: trial[k] for k in _TRIAL_COLUMNS}, "reason": redact(trial["reason"])},
            )

    def _stale_facts(self, run_id: str, trial_idx: int) -> None:
        """A trial's stored facts no longer hold once more is stored of it (vCenter's counters read later by
        `vtax collect`): the analysis computes them again from what is stored, until they are put again."""
        self._db.execute("DELETE FROM trial_facts WHERE run_id = ? AND trial_idx = ?", (run_id, trial_idx))

    @_kept
    def add_agent_result(self, run_id: str, trial_idx: int, result: AgentResult) -> None:
        self._insert_results(run_id, trial_idx, [result])

    @_kept
    def add_agent_results(self, run_id: str, trial_idx: int, results: list[AgentResult]) -> None:
        """A trial's agent results in one commit (a thousand agents' results one commit each took seconds)."""
        self._insert_results(run_id, trial_idx, results)

    def _insert_results(self, run_id: str, trial_idx: int, results: list[AgentResult]) -> None:
        with self._transaction():
            self._stale_facts(run_id, trial_idx)
            self._db.executemany(
                "INSERT INTO agent_results (run_id, trial_idx, agent, workload, status, reason, started_at, ended_at,"
                " agent_cpu_s, summary_json, start_skew_s, host, agent_rss_mb, received_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        trial_idx,
                        result["agent"],
                        result["workload"],
                        result["status"],
                        result["reason"],
                        result.get("started_at"),
                        result.get("ended_at"),
                        result.get("agent_cpu_s"),
                        json.dumps(result.get("summary", {})),
                        result.get("start_skew_s"),
                        result.get("host"),
                        result.get("agent_rss_mb"),
                        result.get("received_at"),
                    )
                    for result in results
                ],
            )
            blocks = [(result, sampleblocks.encode(result["samples"])) for result in results if result.get("samples")]
            self._db.executemany(
                "INSERT INTO sample_blocks VALUES (?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        trial_idx,
                        result["agent"],
                        result["workload"],
                        json.dumps(block["fields"]),
                        block["count"],
                        block["values"],
                        block["histograms"],
                    )
                    for result, block in blocks
                ],
            )

    @_kept
    def add_clocks(self, run_id: str, clocks: dict[str, dict[str, float]]) -> None:
        """Agents' clock readings; an agent measured again (it came back after a loss) keeps its latest."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO agent_clocks VALUES (?,?,?,?,?)",
                [(run_id, agent, c["offset_s"], c["uncertainty_s"], c["rtt_s"]) for agent, c in clocks.items()],
            )

    def clocks(self, run_id: str) -> list[ClockRow]:
        return [
            {k: r[k] for k in ("agent", "offset_s", "uncertainty_s", "rtt_s")}  # type: ignore[misc]
            for r in self._db.execute("SELECT * FROM agent_clocks WHERE run_id = ? ORDER BY agent", (run_id,))
        ]

    @_kept
    def add_host_samples(self, run_id: str, trial_idx: int, samples: list[HostSample]) -> None:
        """Host counter samples of a trial, each naming its host."""
        with self._transaction():
            self._stale_facts(run_id, trial_idx)
            self._db.executemany(
                "INSERT INTO host_counters VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        trial_idx,
                        s["host"],
                        s["t"],
                        s["dt"],
                        json.dumps(s["values"]),
                        json.dumps({k: v for k, v in s.items() if k not in ("t", "dt", "values", "host")}),
                    )
                    for s in samples
                ],
            )

    def delete_run(self, run_id: str) -> None:
        """Remove a run and everything measured in it."""
        with self._transaction():
            for table in _RUN_TABLES:
                self._db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def runs(self, limit: int | None = 50, status: str | None = None) -> list[dict[str, Any]]:
        """The newest runs first, with their trial counts; only those of `status` when it is given."""
        rows = self._db.execute(
            "SELECT r.*, (SELECT COUNT(*) FROM trials t WHERE t.run_id = r.id) AS trials FROM runs r"
            " WHERE ? IS NULL OR r.status = ? ORDER BY created DESC LIMIT ?",
            (status, status, -1 if limit is None else limit),
        )
        return [_as_found(dict(row)) for row in rows]

    def run(self, run_id: str) -> RunRow:
        """A run by id or unique id prefix; InputError when there is none or several."""
        rows = self._db.execute("SELECT * FROM runs WHERE id LIKE ? || '%' ORDER BY created", (run_id,)).fetchall()
        if not rows:
            raise InputError(f"{self.path}: no run {run_id!r} (see `vtax runs`)")
        exact = [row for row in rows if row["id"] == run_id]
        if len(rows) > 1 and not exact:
            raise InputError(f"{self.path}: {run_id!r} matches {len(rows)} runs; give more of the id")
        row = (exact or rows)[0]
        found = _as_found(dict(row))
        run: RunRow = {k: found[k] for k in RunRow.__annotations__ if k != "spec"}  # type: ignore[assignment]
        run["spec"] = json.loads(row["spec_json"])
        return run

    def trials(self, run_id: str) -> list[TrialRecord]:
        rows = self._db.execute("SELECT * FROM trials WHERE run_id = ? ORDER BY idx", (run_id,))
        return [{k: r[k] for k in _TRIAL_COLUMNS} for r in rows]  # type: ignore[misc]

    def agent_results(self, run_id: str) -> list[StoredResult]:
        rows = self._db.execute("SELECT * FROM agent_results WHERE run_id = ? ORDER BY trial_idx, agent", (run_id,))
        columns = [k for k in StoredResult.__annotations__ if k != "summary"]
        return [
            {**{k: r[k] for k in columns}, "summary": json.loads(r["summary_json"] or "{}")}  # type: ignore[misc]
            for r in rows
        ]

    def _rows(self, table: str, run_id: str, trial_idx: int | None) -> list[sqlite3.Row]:
        """A run's rows of `table` (of one trial, given `trial_idx`), in trial and time order."""
        if trial_idx is None:
            query, args = f"SELECT * FROM {table} WHERE run_id = ? ORDER BY trial_idx, t", (run_id,)
        else:
            query, args = f"SELECT * FROM {table} WHERE run_id = ? AND trial_idx = ? ORDER BY t", (run_id, trial_idx)
        with self._lock:
            return self._db.execute(query, args).fetchall()

    def samples(self, run_id: str, trial_idx: int | None = None) -> list[StoredSample]:
        """A run's workload samples (of one trial, given `trial_idx`), in trial and time order: those kept in
        blocks, and those an older vtax kept a row each."""
        samples: list[StoredSample] = []
        for r in self._rows("samples", run_id, trial_idx):  # an older store's rows
            sample: StoredSample = {k: r[k] for k in ("trial_idx", "agent", "workload", "t", "dt")}  # type: ignore[assignment]
            sample["values"] = json.loads(r["values_json"])
            if r["histogram_json"]:
                sample["histogram"] = json.loads(r["histogram_json"])
            samples.append(sample)
        query = "SELECT * FROM sample_blocks WHERE run_id = ? AND (? IS NULL OR trial_idx = ?) ORDER BY rowid"
        with self._lock:
            blocks = self._db.execute(query, (run_id, trial_idx, trial_idx)).fetchall()
        for r in blocks:
            block: sampleblocks.Block = {
                "fields": json.loads(r["fields_json"]),
                "count": r["count"],
                "values": r["values_blob"],
                "histograms": r["histograms_blob"],
            }
            source = {"trial_idx": r["trial_idx"], "agent": r["agent"], "workload": r["workload"]}
            samples += [{**source, **s} for s in sampleblocks.decode(block)]  # type: ignore[typeddict-item]
        samples.sort(key=lambda s: (s["trial_idx"], s["t"]))
        return samples

    @_kept
    def put_facts(self, run_id: str, trial_idx: int, facts: TrialFacts) -> None:
        """A trial's facts (`controller.facts`), computed as it ended, or again once late counters came in."""
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO trial_facts VALUES (?,?,?)", (run_id, trial_idx, json.dumps(facts))
            )

    def facts(self, run_id: str, trial_idx: int) -> TrialFacts | None:
        """A trial's stored facts, if it has any (read a trial at a time: a day's soak holds 1,440)."""
        query = "SELECT facts_json FROM trial_facts WHERE run_id = ? AND trial_idx = ?"
        with self._lock:
            row = self._db.execute(query, (run_id, trial_idx)).fetchone()
        return None if row is None else json.loads(row["facts_json"])

    def host_samples(self, run_id: str, trial_idx: int | None = None) -> list[StoredHostSample]:
        rows = self._rows("host_counters", run_id, trial_idx)
        return [
            {
                "trial_idx": r["trial_idx"],
                "host": r["host"],
                "t": r["t"],
                "dt": r["dt"],
                "values": json.loads(r["values_json"]),
                **json.loads(r["detail_json"]),
            }
            for r in rows
        ]

    @_kept
    def add_vsphere_samples(self, run_id: str, trial_idx: int, rows: list[dict[str, Any]]) -> None:
        """Raw and converted vSphere counter values, each with its entity's role (host, agent_vm, appliance)."""
        columns = ("role", "entity", "moid", "host", "counter", "instance", "t", "dt", "raw", "value", "unit")
        with self._transaction():
            self._db.executemany(
                f"INSERT INTO vsphere_counters VALUES (?,?,{','.join('?' * len(columns))})",
                [(run_id, trial_idx, *(row[c] for c in columns)) for row in rows],
            )

    def vsphere_trials(self, run_id: str) -> set[int]:
        """The trials that have vSphere counters."""
        rows = self._db.execute("SELECT DISTINCT trial_idx FROM vsphere_counters WHERE run_id = ?", (run_id,))
        return {r["trial_idx"] for r in rows}

    def vsphere_samples(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM vsphere_counters WHERE run_id = ? ORDER BY trial_idx, t", (run_id,))
        return [dict(r) for r in rows]

    @_kept
    def add_flag(self, run_id: str, trial_idx: int, *, kind: str, severity: str, message: str) -> None:
        """Something about a trial that the analysis must know: a VM migrated, counters incomplete."""
        with self._transaction():
            self._db.execute("INSERT INTO trial_flags VALUES (?,?,?,?,?)", (run_id, trial_idx, kind, severity, message))

    @_kept
    def clear_flags(self, run_id: str, trial_idx: int, *, kind: str) -> None:
        with self._transaction():
            self._db.execute(
                "DELETE FROM trial_flags WHERE run_id = ? AND trial_idx = ? AND kind = ?", (run_id, trial_idx, kind)
            )

    def flags(self, run_id: str) -> list[Flag]:
        rows = self._db.execute("SELECT * FROM trial_flags WHERE run_id = ? ORDER BY trial_idx", (run_id,))
        return [{k: r[k] for k in ("trial_idx", "kind", "severity", "message")} for r in rows]  # type: ignore[misc]

    @_kept
    def add_hook_run(self, run_id: str, trial_idx: int, hook: HookRun) -> None:
        """What one hook printed; a URL's password in it is kept out."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO hook_runs VALUES (?,?,?,?,?,?,?)",
                (
                    run_id,
                    trial_idx,
                    hook["stage"],
                    redact(hook["command"]),
                    hook["exit_code"],
                    redact(hook["output"]),
                    hook["seconds"],
                ),
            )

    def hook_runs(self, run_id: str) -> list[tuple[int, HookRun]]:
        """Every hook of a run as it ran, with its trial, in order."""
        rows = self._db.execute("SELECT * FROM hook_runs WHERE run_id = ? ORDER BY rowid", (run_id,))
        return [
            (r["trial_idx"], {k: r[k] for k in ("stage", "command", "exit_code", "output", "seconds")})  # type: ignore[misc]
            for r in rows
        ]

    @_kept
    def put_note(self, run_id: str, key: str, value: Any) -> None:
        """A JSON-able fact about the run as a whole, e.g. where vSphere placed its agents."""
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO run_notes VALUES (?,?,?)", (run_id, key, json.dumps(value)))

    def notes(self, run_id: str) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, value_json FROM run_notes WHERE run_id = ?", (run_id,))
        return {r["key"]: json.loads(r["value_json"]) for r in rows}
