"""The run store: it opens stores older versions made, and keeps what was measured through every fault a
store can have (another process holding it, a full disk, a file system made read-only, a killed controller)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from controller import runloop, sampleblocks
from controller.facts import trial_facts
from controller.spec import parse
from controller.store import Store
from tests.conftest import Vtax
from workloads.base import Sample


def test_a_store_from_before_start_skew_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE agent_results (run_id TEXT NOT NULL, trial_idx INTEGER NOT NULL, agent TEXT NOT NULL,"
        " workload TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, started_at REAL, ended_at REAL,"
        " agent_cpu_s REAL, summary_json TEXT)"
    )
    db.execute("INSERT INTO agent_results VALUES ('r1', 0, 'a', 'w', 'ok', '', 1.0, 2.0, 0.1, '{}')")
    db.commit()
    db.close()
    store = Store(path)
    store.add_agent_result(
        "r2", 0, {"agent": "a", "workload": "w", "status": "ok", "reason": "", "start_skew_s": 0.002}
    )
    rows = {r["run_id"]: r for r in [*store.agent_results("r1"), *store.agent_results("r2")]}
    assert rows["r1"]["start_skew_s"] is None and rows["r1"]["agent_cpu_s"] == 0.1
    assert rows["r2"]["start_skew_s"] == 0.002


# --- faults: a store held by another process, a full disk, a file system made read-only -----------------


SLOW_NOOP = """\
name: store-faults
agents: [{name: a}]
conditions: [{name: base, baseline: true}, {name: other}]
workloads: [{kind: noop, agents: [a]}]
timing: {warmup: 0, steady: STEADY, cooldown: 0, lead: 0.3, grace: 1}
repetitions: REPS
"""


def noop_spec(steady: float, repetitions: int) -> str:
    return SLOW_NOOP.replace("STEADY", str(steady)).replace("REPS", str(repetitions))


def hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process that takes the store's write lock and keeps it for `seconds`."""
    code = (
        "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None);"
        "db.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(float(sys.argv[2])); db.execute('COMMIT')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_store_locked_by_another_process_for_8_s_is_waited_for(vtax: Vtax) -> None:
    spec = vtax.spec(noop_spec(steady=1, repetitions=1))
    Store(vtax.store).close()  # the store exists, in WAL mode
    holder = hold_lock(vtax.store, 8)
    done, result = vtax.run_json(spec)
    holder.wait()
    assert done.returncode == 0, done.stderr
    assert result["status"] == "completed" and [t["status"] for t in result["trials"]] == ["ok"] * 2


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of its own, to fill or make read-only under a running store."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _run_until_trial(vtax: Vtax, spec: Path, store: Path) -> subprocess.Popen[str]:
    env = {**vtax.env, "VTAX_STORE": str(store)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "vtax"), "run", str(spec), "--json", "out.json"],
        cwd=vtax.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        if store.exists() and _trials(store) >= 1:
            return proc
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the run did not store its first trial")


def _trials(store: Path) -> int:
    try:
        return int(sqlite3.connect(store, timeout=1).execute("SELECT COUNT(*) FROM trials").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_store_whose_disk_fills_mid_run_loses_nothing(vtax: Vtax, small_disk: Path) -> None:
    """Exit 3 at the end of the trial, with one line that says where what was measured went; once the disk has
    room again, `vtax import` adds it to the store, and the run there has every trial it measured."""
    store = small_disk / "runs.db"
    spec = vtax.spec(noop_spec(steady=1.5, repetitions=3))
    proc = _run_until_trial(vtax, spec, store)
    subprocess.run(["dd", "if=/dev/zero", f"of={small_disk}/filler", "bs=64k"], capture_output=True, check=False)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "cannot be written" in line and "vtax import" in line, line
    side = re.search(r"kept in (\S+):", line).group(1)  # type: ignore[union-attr]
    assert Path(side).is_file() and os.stat(side).st_mode & 0o077 == 0
    (small_disk / "filler").unlink()  # the disk is repaired, as the message asks
    done = vtax("import", side, "--store", str(store))
    assert done.returncode == 0, done.stderr
    run_id = re.search(r"\d{8}-\d{6}-[0-9a-f]{4}", done.stdout).group()  # type: ignore[union-attr]
    done = vtax("show", run_id, "--store", str(store), "--json", "recovered.json")
    assert done.returncode in (0, 1), done.stderr
    recovered = json.loads((vtax.workdir / "recovered.json").read_text())
    assert recovered["status"] == "aborted" and "cannot be written" in recovered["reason"]
    assert len(recovered["trials"]) >= 2 and all(t["status"] == "ok" for t in recovered["trials"])
    assert sum(len(m["by_condition"]) for m in recovered["metrics"].values()) >= 0
    Path(side).unlink()


def test_a_store_on_a_read_only_file_system_is_refused_before_any_load_and_still_read(
    vtax: Vtax, small_disk: Path
) -> None:
    """(Linux refuses to remount a file system read-only while the store is open for writing, so it is made
    read-only between runs.) A run is refused with exit 3 and one line before any load; `vtax show` still reads."""
    store = small_disk / "runs.db"
    spec = vtax.spec(noop_spec(steady=1, repetitions=1))
    done, result = vtax.run_json(spec, "--store", str(store))
    assert done.returncode == 0, done.stderr
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = vtax("run", str(spec), "--store", str(store))
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "cannot open the run store" in line and "read-only" in line, line
    assert "trial 1/" not in done.stdout  # no load ran
    shown = vtax("show", result["run_id"], "--store", str(store))
    assert shown.returncode == 0 and result["run_id"] in shown.stdout, shown.stderr


def _open_store(path: str) -> None:
    Store(path).close()


def test_processes_that_open_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """A run and a `vtax runs` opening a store at the same moment: neither sees "duplicate column" nor "locked"
    (SQLite refuses a concurrent switch to WAL without waiting; both the switch and the upgrade wait their turn)."""
    import multiprocessing

    paths = [str(tmp_path / f"new-{n}.db") for n in range(8)]
    with multiprocessing.get_context("fork").Pool(6) as pool:
        for path in paths:
            pool.map(_open_store, [path] * 6)
    for path in paths:
        columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(runs)")}
        assert {"controller_host", "controller_pid", "controller_started"} <= columns


def test_a_run_whose_controller_was_killed_shows_as_interrupted(vtax: Vtax) -> None:
    """SIGKILL the controller as soon as its run is stored: the run shows as interrupted, and its agents, still
    starting, die with it."""
    spec = vtax.spec(noop_spec(steady=20, repetitions=1))
    proc = vtax.start("run", str(spec))
    give_up = time.monotonic() + 30
    while not (vtax.store.exists() and Store(vtax.store).runs()):
        assert time.monotonic() < give_up, "the run never appeared in the store"
        time.sleep(0.1)
    assert Store(vtax.store).runs()[0]["status"] == "running"
    agents = psutil.Process(proc.pid).children()  # killed this early, they may still be importing
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(agents, timeout=3)
    assert not alive, "an agent outlived its controller"
    listed = json.loads(vtax("runs", "--json").stdout)
    assert listed[0]["status"] == "interrupted" and "is gone" in listed[0]["reason"]


def test_two_runs_that_draw_the_same_id_both_get_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs in the same second draw the same id 1 in 65,536 times: the second takes a fresh one."""
    from controller.engine import EmbeddedEngine
    from controller.spec import parse

    experiment = parse(noop_spec(steady=0.5, repetitions=1))
    store = Store(tmp_path / "runs.db")
    ids = iter(["20261202-000000-abcd", "20261202-000000-abcd", "20261202-000000-beef"])
    monkeypatch.setattr(runloop, "new_run_id", lambda: next(ids))
    first = runloop.RunLoop(experiment, store=store, engine=EmbeddedEngine.for_experiment(experiment), spec_path=None)
    second = runloop.RunLoop(experiment, store=store, engine=EmbeddedEngine.for_experiment(experiment), spec_path=None)
    assert first.execute() == "20261202-000000-abcd"
    assert second.execute() == "20261202-000000-beef"
    assert {r["id"] for r in store.runs()} == {"20261202-000000-abcd", "20261202-000000-beef"}


def test_a_side_file_names_only_store_writes(tmp_path: Path, vtax: Vtax) -> None:
    """`vtax import` carries out the writes a side file may hold and nothing else: a line naming any other
    method is refused as bad input, before anything is done."""
    side = tmp_path / "evil.jsonl"
    side.write_text(json.dumps({"op": "delete_run", "args": ["x"], "kwargs": {}}) + "\n")
    done = vtax("import", str(side))
    assert done.returncode == 2 and "not a store write" in done.stderr and "Traceback" not in done.stderr


SPEC_FOR_FACTS = """
name: facts
agents: [{name: a}, {name: b}, {name: s}]
conditions: [{name: base, baseline: true}]
workloads: [{kind: http, agents: [a, b], server: s}]
"""


def test_samples_come_back_from_their_compact_blocks_as_they_were_stored(tmp_path: Path) -> None:
    """A block keeps every sample's times, values (a field some samples lack stays absent) and histogram."""
    rng = random.Random(7)
    samples: list[Sample] = []
    for second in range(300):
        sample: Sample = {"t": 1_800_000_000.123456 + second, "dt": 1.0 + rng.random() / 1000, "values": {}}
        sample["values"]["rps"] = rng.uniform(0, 1e5)
        if second % 7:
            sample["values"]["cpu_warning"] = 1.0
        if second % 3:
            sample["histogram"] = {str(rng.randrange(500, 900)): rng.randrange(1, 10**6) for _ in range(40)}
        samples.append(sample)
    assert sampleblocks.decode(sampleblocks.encode(samples)) == samples

    store = Store(tmp_path / "blocks.db")
    store.create_run(run_id="r", name="n", engine="embedded", spec_path=None, spec={})
    for agent in ("b", "a"):
        store.add_agent_result("r", 3, {
            "agent": agent, "workload": "http", "status": "ok", "reason": "", "samples": samples, "summary": {},
        })  # fmt: skip
    back = store.samples("r", 3)
    assert [s["t"] for s in back] == sorted(s["t"] for s in back)  # both agents' samples, in time order
    assert [{k: v for k, v in s.items() if k not in ("trial_idx", "agent", "workload")} for s in back[::2]] == samples
    assert store.samples("r", 4) == [] and len(store.samples("r")) == 600

    # a trial's stored facts go stale when more of it is stored (vCenter's counters, read later)
    facts = trial_facts(parse(SPEC_FOR_FACTS), back[0]["t"], back, [])
    store.put_facts("r", 3, facts)
    assert store.facts("r", 3) == json.loads(json.dumps(facts))
    store.add_host_samples("r", 3, [{"t": back[0]["t"], "dt": 20.0, "host": "esx1", "values": {"host.cpu_pct": 5.0}}])
    assert store.facts("r", 3) is None
