"""What an agent keeps on disk of each load task until the controller has stored it.

A soak outlives its controller: one killed or rebooted mid-segment comes back with `vtax run --resume`, and the
segment it was measuring must not be lost. So each load task's samples go, as they are measured, to a file of
their own (one JSON line each, in the controller's clock, flushed at once), and its result follows when the
task ends. Every later load task of the run says which trials the controller has stored (`acked_before`), and
their files go; the `vtax.kept` task hands the rest back, a task still without a result as what it measured
until its agent stopped. Files are named by run and trial only, from checked names; nothing in them is run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import IO

from agent.wire import AgentResult, KeptResult
from workloads.base import Sample

log = logging.getLogger("vtax.agent")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
KEEP_S = 31 * 86400  # a soak lasts 30 days at most
STOPPED = "its agent stopped before the load ended (the controller was gone); the samples up to then are kept"


def _part(name: str) -> str:
    """A name as one path component (the wire's names are checked already; this keeps it so)."""
    return _SAFE.sub("_", name)[:120] or "_"


class KeptTask:
    """One load task's file, open while it runs. A disk that fails it costs the keeping, never the load: the
    task runs on, its result still goes to the controller, and the agent logs why it kept nothing more."""

    def __init__(self, path: Path, header: dict[str, object]) -> None:
        self._path = path
        self._file: IO[str] | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed in done())
        except OSError as exc:
            log.warning("cannot keep %s: %s", path, exc)
        self._write({"header": header})

    def _write(self, line: dict[str, object]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()  # in the page cache at once: a killed agent's samples survive it
        except OSError as exc:
            log.warning("stopped keeping %s: %s", self._path, exc)
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def sample(self, sample: Sample) -> None:
        self._write({"sample": sample})

    def done(self, result: AgentResult) -> None:
        """The task's result (its samples are in the file already), and the file closed on disk."""
        self._write({"result": {k: v for k, v in result.items() if k != "samples"}})
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._file.fileno())
                self._file.close()


class Kept:
    """An agent process's kept tasks, under `root`/<run>/<trial>-<agent>-<workload>.jsonl. A run none of whose
    files changed for KEEP_S (longer than any soak) is let go: its controller is not coming back for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # an agent runs several load tasks at once (tiles): one's forget removed the run's directory while
        # another listed it, or before it opened its file there
        self._lock = threading.Lock()
        cutoff = time.time() - KEEP_S
        for directory in root.glob("*"):
            files = list(directory.glob("*.jsonl"))
            with contextlib.suppress(OSError):
                if all(path.stat().st_mtime < cutoff for path in files):
                    for path in files:
                        path.unlink()
                    directory.rmdir()

    def begin(self, *, run: str, trial: int, agent: str, workload: str, start_at: float, deadline: float) -> KeptTask:
        path = self.root / _part(run) / f"{trial:07d}-{_part(agent)}-{_part(workload)}.jsonl"
        header = {"trial": trial, "agent": agent, "workload": workload, "start_at": start_at, "deadline": deadline}
        with self._lock:
            return KeptTask(path, header)

    def forget(self, run: str, before: int) -> None:
        """The run's tasks of trials before `before`: the controller has stored them."""
        directory = self.root / _part(run)
        with self._lock:
            for path in directory.glob("*.jsonl"):
                if _trial_of(path) < before:
                    path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                directory.rmdir()  # only once empty

    def collect(self, run: str) -> list[KeptResult]:
        """What the run's kept tasks measured, in trial order: each finished task's result, and a task cut off
        (no result line) as status `lost`, with the samples it wrote."""
        found = []
        with self._lock:
            paths = sorted((self.root / _part(run)).glob("*.jsonl"))
        for path in paths:
            kept = _read(path)
            if kept is not None:
                found.append(kept)
        return found


def _trial_of(path: Path) -> int:
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else -1


def _read(path: Path) -> KeptResult | None:
    """A kept task's file; a line cut off by the kill (the last, half-written) is left out."""
    header: dict[str, object] | None = None
    samples: list[Sample] = []
    result: dict[str, object] | None = None
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                break
            if "header" in entry:
                header = entry["header"]
            elif "sample" in entry:
                samples.append(entry["sample"])
            elif "result" in entry:
                result = entry["result"]
    if header is None:
        return None
    finished = result or {
        "agent": header["agent"],
        "workload": header["workload"],
        "status": "lost",
        "reason": STOPPED,
        "summary": {},
        "start_at": header["start_at"],
        "ended_at": max((s["t"] + s["dt"] for s in samples), default=header["start_at"]),
    }
    return {
        "trial": header["trial"],  # type: ignore[typeddict-item]
        "start_at": header["start_at"],  # type: ignore[typeddict-item]
        "deadline": header["deadline"],  # type: ignore[typeddict-item]
        "result": {**finished, "samples": samples},  # type: ignore[typeddict-item]
    }
